"""The confusion matrix of a whole dataset split, and the metrics read from it.

Counts are summed over every pixel of every image before any ratio is taken (datasets.md §8, as
mmseg and cityscapesScripts do): the mIoU of a split is *not* the mean of per-image IoUs.

Conventions (those of cityscapesScripts' ``evalPixelLevelSemanticLabeling``):

* Pixels whose ground truth is ``ignore_index`` are not counted at all, whatever was predicted there.
* A prediction that is not a class (``255``, or any value outside ``[0, C)``) on a valid pixel is a
  miss for the ground-truth class: it adds to that class's false negatives and to no class's false
  positives. Such pixels are kept in :attr:`ConfusionMatrix.unassigned`, outside the C×C
  :attr:`~ConfusionMatrix.matrix` (cityscapesScripts sees them as predictions of an ignored labelId).
* IoU = TP / (TP + FP + FN). A class absent from both ground truth and prediction has no IoU (NaN) and
  is left out of the mean; a class that is only predicted has IoU 0 and counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptseg.data.labels import CLASSES, IGNORE_INDEX, PROTOCOLS


def _as_numpy(x: Any) -> np.ndarray:
    """A numpy view of a numpy array or a torch tensor (on any device), without importing torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` as float64, NaN where ``den == 0`` (no warning)."""
    out = np.full(np.shape(num), np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=np.asarray(den) > 0)
    return out


def nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN (without a RuntimeWarning) when there are none."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


class ConfusionMatrix:
    """Pixel counts over a dataset split: rows are ground-truth classes, columns predicted classes.

    ``update`` adds one prediction/label pair (any shape, numpy or torch); ``merge`` / ``+=`` add the
    counts of another matrix, so data-loader workers or distributed ranks can each count their share
    and reduce. For ``torch.distributed``, all-reduce :attr:`counts` and rebuild with
    :meth:`from_counts`.
    """

    def __init__(self, num_classes: int = len(CLASSES), ignore_index: int = IGNORE_INDEX):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class id (0..{num_classes - 1})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        # Column C holds valid pixels whose prediction is not a class (see the module docstring).
        self._counts = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    # -- accumulation -------------------------------------------------------------------------------
    def update(self, pred: Any, target: Any) -> ConfusionMatrix:
        """Add the pixels of one prediction/ground-truth pair (integer class ids, identical shapes).

        ``target`` holds class ids in ``[0, C)`` or ``ignore_index``; any other value is an error.
        ``pred`` may hold anything: values outside ``[0, C)`` are misses for the ground-truth class.
        """
        pred, target = _as_numpy(pred), _as_numpy(target)
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {pred.shape} differs from ground-truth shape {target.shape}; "
                "predict at the ground truth's full resolution"
            )
        for name, arr in (("prediction", pred), ("ground truth", target)):
            if arr.dtype.kind not in "iub":
                raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
        c = self.num_classes
        valid = target != self.ignore_index
        gt = target[valid].astype(np.int64, copy=False)
        if gt.size and (gt.min() < 0 or gt.max() >= c):
            bad = gt[(gt < 0) | (gt >= c)][0]
            raise ValueError(
                f"ground truth contains {bad}, which is neither a class id (0..{c - 1}) "
                f"nor the ignore index {self.ignore_index}"
            )
        pr = pred[valid].astype(np.int64)
        pr[(pr < 0) | (pr >= c)] = c
        counts = np.bincount(gt * (c + 1) + pr, minlength=c * (c + 1))
        self._counts += counts.reshape(c, c + 1)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts to this one (same classes and ignore index) and return self."""
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix (ignore {other.ignore_index}) into a "
                f"{self.num_classes}-class one (ignore {self.ignore_index})"
            )
        self._counts += other._counts
        return self

    def all_reduce(self, group: Any = None) -> ConfusionMatrix:
        """Sum the counts over the ranks of ``torch.distributed`` in place (no-op when not distributed).

        Every rank must call it. With the NCCL backend the counts travel on the current CUDA device.
        """
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        on_gpu = dist.get_backend(group) == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
        counts = torch.from_numpy(self._counts).to(device)
        dist.all_reduce(counts, group=group)
        self._counts = counts.cpu().numpy().astype(np.int64, copy=False)
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.copy().merge(other)

    def copy(self) -> ConfusionMatrix:
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        out._counts = self._counts.copy()
        return out

    def reset(self) -> None:
        self._counts[:] = 0

    @classmethod
    def from_counts(cls, counts: Any, ignore_index: int = IGNORE_INDEX) -> ConfusionMatrix:
        """Rebuild a matrix from :attr:`counts` (C×(C+1)) or from a plain C×C matrix."""
        counts = _as_numpy(counts)
        if counts.ndim != 2 or counts.shape[1] not in (counts.shape[0], counts.shape[0] + 1):
            raise ValueError(f"counts must be C×C or C×(C+1), got shape {counts.shape}")
        out = cls(counts.shape[0], ignore_index)
        out._counts[:, : counts.shape[1]] = counts
        return out

    # -- raw counts ---------------------------------------------------------------------------------
    @property
    def counts(self) -> np.ndarray:
        """All counts, C×(C+1) int64: the C×C matrix plus the :attr:`unassigned` column."""
        return self._counts

    @property
    def matrix(self) -> np.ndarray:
        """C×C int64 counts; ``matrix[g, p]`` = pixels of ground-truth class g predicted as p."""
        return self._counts[:, : self.num_classes]

    @property
    def unassigned(self) -> np.ndarray:
        """Per ground-truth class, the valid pixels whose prediction was no class (e.g. 255)."""
        return self._counts[:, self.num_classes]

    @property
    def total(self) -> int:
        """Number of valid (non-ignored) ground-truth pixels counted."""
        return int(self._counts.sum())

    # -- metrics (fractions in [0, 1]; NaN where undefined) ------------------------------------------
    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (TP + FP + FN); NaN for classes absent from both GT and prediction."""
        tp = np.diag(self.matrix)
        gt = self._counts.sum(axis=1)
        pred = self.matrix.sum(axis=0)
        return _ratio(tp, gt + pred - tp)

    def miou(self, classes: Sequence[int] | None = None) -> float:
        """Mean IoU over ``classes`` (default: all), leaving out classes without an IoU (NaN)."""
        iou = self.iou()
        return nanmean(iou if classes is None else iou[list(classes)])

    def pixel_accuracy(self) -> float:
        """Correct pixels / valid pixels over the whole split (mmseg's ``aAcc``)."""
        return float(_ratio(np.trace(self.matrix), self.total))

    def per_class_accuracy(self) -> np.ndarray:
        """Per-class recall TP / ground-truth pixels; NaN for classes absent from the ground truth."""
        return _ratio(np.diag(self.matrix), self._counts.sum(axis=1))

    def protocol_classes(self, protocol: int | None) -> tuple[int, ...]:
        """The class ids averaged under a protocol (19/16/13 for the Cityscapes classes; None = all)."""
        if protocol is None or protocol == self.num_classes:
            return tuple(range(self.num_classes))
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol}; choose from {sorted(PROTOCOLS)}")
        if self.num_classes != len(CLASSES):
            raise ValueError(f"protocol {protocol} needs the {len(CLASSES)} Cityscapes classes")
        return PROTOCOLS[protocol]

    def to_dict(self, protocol: int | None = 19, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The metrics as a JSON-ready dict, in percent; undefined values are ``None``.

        Keys: ``mIoU`` (over the protocol's classes), ``mIoU<k>`` for each smaller protocol nested in
        it (e.g. ``mIoU13`` under 16), ``per_class`` {name: IoU}, ``per_class_acc`` {name: recall},
        ``aAcc``, ``mAcc``, ``protocol``, ``protocol_classes`` (names) and ``pixels``.
        """
        names = self._class_names(class_names)
        ids = self.protocol_classes(protocol)
        iou, acc = self.iou(), self.per_class_accuracy()
        out: dict[str, Any] = {
            "protocol": protocol or self.num_classes,
            "mIoU": _percent(nanmean(iou[list(ids)])),
        }
        for k, nested in self._nested_protocols(ids).items():
            out[f"mIoU{k}"] = _percent(nanmean(iou[list(nested)]))
        out.update(
            aAcc=_percent(self.pixel_accuracy()),
            mAcc=_percent(nanmean(acc[list(ids)])),
            per_class={n: _percent(v) for n, v in zip(names, iou, strict=True)},
            per_class_acc={n: _percent(v) for n, v in zip(names, acc, strict=True)},
            protocol_classes=[names[i] for i in ids],
            pixels=self.total,
        )
        return out

    def _class_names(self, class_names: Sequence[str] | None) -> list[str]:
        if class_names is None:
            class_names = (
                CLASSES if self.num_classes == len(CLASSES) else [str(i) for i in range(self.num_classes)]
            )
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for a {self.num_classes}-class matrix")
        return list(class_names)

    def _nested_protocols(self, ids: tuple[int, ...]) -> dict[int, tuple[int, ...]]:
        if self.num_classes != len(CLASSES):
            return {}
        return {k: v for k, v in PROTOCOLS.items() if set(v) < set(ids)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return self.ignore_index == other.ignore_index and np.array_equal(self._counts, other._counts)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={self.total})"


def _percent(value: float) -> float | None:
    """A fraction as a percentage, or ``None`` when undefined (NaN is not valid JSON)."""
    return None if np.isnan(value) else 100.0 * float(value)
