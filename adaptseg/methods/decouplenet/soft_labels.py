"""DecoupleNet's offline soft labels: written compactly, read back as logits, thresholded, fused (§2.2-2.3, §3).

Three forms, one reader (:class:`SoftLabels`):

* ``float16`` (default, compact) — the release's raw logits at the output stride, stored as float16 ``.npy``
  (half the bytes). Rounding moves a logit by at most 2⁻¹¹ of its magnitude, so the thresholds and the
  fused pseudo-labels phase 2 reads differ from the release's only at exact ties.
* ``topk`` (most compact) — the pseudo-label store (:mod:`adaptseg.infer.store`) with its top-k soft form
  at the model's output stride: per 1/8 cell the k most likely classes (uint8) and their probabilities
  (uint8 round(255·p)), zlib-compressed, beside the store's label/confidence PNGs. Read back as
  **log-probabilities**, which are logits up to a per-pixel constant: bilinear interpolation of a per-pixel
  constant is the same for every class and softmax ignores it, so "interpolate the logits, then softmax"
  (§6) is kept. The mass outside the top k is spread evenly over the other classes, floored at half a
  quantisation step so that its log stays finite.
* ``float32`` — the release's form (``generate_soft_label.py``): raw float32 logits at the output stride,
  one ``<image basename without extension>.npy`` per image (``aachen_000000_000019_leftImg8bit.npy``), so a
  folder the release wrote reads as well. 2.5 MB per Cityscapes image; kept to measure the compact forms.
  The two logit forms share the folder layout; the ``.npy`` header says which one a file is.

Per-class thresholds (``get_thresholds.py 0.8``, :func:`offline_thresholds`): softmax at the output
stride, per-pixel argmax and max-probability, pooled per predicted class over the split, sorted
descending, ``thr[c] = list_c[int(0.8·len_c)]``; saved as ``<folder>_thresholds_p0.8.npy`` (length C, by
trainId). A class that is never the argmax gets 0 (the release's loop breaks on it, §6). For the ``topk``
form the pooled values are the stored top-1 probabilities (exact order statistics of what phase 2 reads).

Fusion (§3 "Phase 2", :func:`fuse_pseudo_labels`): ``P = (offline + online)/2``; ``ŷ = argmax P``; 255 where
``max P < thr[ŷ]`` (strict, equality kept).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from adaptseg.errors import UserError
from adaptseg.io import atomic_path
from adaptseg.methods.parts.confidence_bank import SD_PERCENTILE, descending_percentile
from adaptseg.methods.parts.thresholds import apply_class_thresholds

STORE_DIR = "store"
LOGITS_DIR = "logits"
#: the store keeps probabilities as multiples of 1/255; the log of the unstored mass is floored at half a step
PROBABILITY_FLOOR = 0.5 / 255


def thresholds_path(folder: Path, percentile: float = SD_PERCENTILE) -> Path:
    """``<folder>_thresholds_p0.8.npy`` beside ``folder`` (the release writes it into the working directory)."""
    return folder.parent / f"{folder.name}_thresholds_p{percentile}.npy"


def logits_file(folder: Path, image_path: Path) -> Path:
    """The release's soft-label file of an image: ``<folder>/<image basename without extension>.npy``."""
    return folder / f"{Path(image_path).stem}.npy"


def offline_thresholds(
    maps: Iterable[tuple[Tensor, Tensor]], num_classes: int, percentile: float = SD_PERCENTILE
) -> np.ndarray:
    """Per-class thresholds from ``(argmax, max-probability)`` maps pooled over a split (module docstring)."""
    pooled: list[list[Tensor]] = [[] for _ in range(num_classes)]
    for label, confidence in maps:
        label, confidence = label.reshape(-1), confidence.reshape(-1).float()
        for c in label.unique().tolist():
            if 0 <= c < num_classes:
                pooled[c].append(confidence[label == c])
    return np.array(
        [descending_percentile(torch.cat(values), percentile).item() if values else 0.0 for values in pooled],
        dtype=np.float32,
    )


def save_thresholds(path: Path, thresholds: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, thresholds.astype(np.float32))


def save_logits(path: Path, logits: Tensor, dtype: str = "float32") -> None:
    """One image's raw C×h×w logits as a ``dtype`` (float32 or float16) ``.npy``, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, logits.detach().float().cpu().numpy().astype(dtype))


def topk_logits(classes: np.ndarray, probs: np.ndarray, num_classes: int) -> Tensor:
    """C×h×w log-probabilities from the store's top-k classes and probabilities (k×h×w)."""
    classes_t = torch.from_numpy(classes.astype(np.int64))
    probs_t = torch.from_numpy(probs.astype(np.float32))
    rest = (1.0 - probs_t.sum(0, keepdim=True)).clamp(min=0.0) / max(num_classes - classes.shape[0], 1)
    full = rest.expand(num_classes, *classes.shape[1:]).clone()
    full.scatter_(0, classes_t, probs_t)
    return full.clamp(min=PROBABILITY_FLOOR).log()


class SoftLabels:
    """A soft-label stage's output, read per image as C×h×w logits (either form) with its thresholds."""

    def __init__(
        self,
        stage_dir: Path,
        image_paths: dict[str, Path],
        num_classes: int,
        percentile: float = SD_PERCENTILE,
    ):
        from adaptseg.infer.store import PseudoLabelStore

        self.num_classes = num_classes
        self.image_paths = image_paths
        if (stage_dir / STORE_DIR / "store.json").is_file():
            self.form, folder = "topk", stage_dir / STORE_DIR
            self.store = PseudoLabelStore(folder)
            if not self.store.topk:
                raise UserError(
                    "this pseudo-label store keeps no soft labels (topk 0)",
                    path=folder,
                    fix="run the decouplenet_soft_labels stage again (delete its folder first)",
                )
        elif (stage_dir / LOGITS_DIR).is_dir():
            self.form, folder = "logits", stage_dir / LOGITS_DIR
        else:
            raise UserError(
                "no soft labels here (neither store/ nor logits/)",
                path=stage_dir,
                fix="point options.soft_labels at a decouplenet_soft_labels stage",
            )
        self.folder = folder
        file = thresholds_path(folder, percentile)
        try:
            self.thresholds = torch.from_numpy(np.load(file)).float()
        except (OSError, ValueError) as exc:
            raise UserError(
                f"unreadable thresholds file ({exc})",
                path=file,
                fix="run the decouplenet_soft_labels stage again (delete its folder first)",
            ) from None
        if self.thresholds.shape != (num_classes,):
            raise UserError(
                f"thresholds of shape {tuple(self.thresholds.shape)}, expected ({num_classes},)",
                path=file,
                fix="make the soft labels with the same class count",
            )

    def logits(self, image_id: str) -> Tensor:
        """C×h×w logits of ``image_id`` at the output stride (log-probabilities for the top-k form)."""
        if self.form == "topk":
            topk = self.store.read(image_id).topk
            assert topk is not None
            return topk_logits(topk.classes, topk.probs, self.num_classes)
        path = logits_file(self.folder, self.image_paths[image_id])
        try:
            array = np.load(path)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"unreadable soft label ({exc})",
                path=path,
                fix="run the decouplenet_soft_labels stage again (delete its folder first)",
            ) from None
        if array.ndim != 3 or array.shape[0] != self.num_classes:
            raise UserError(
                f"soft label of shape {array.shape}, expected ({self.num_classes}, h, w)",
                path=path,
                fix="write raw C×h×w logits per image",
            )
        return torch.from_numpy(array).float()


def upsampled_soft_label(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Offline logits bilinearly upsampled (align_corners=True) to the full image size, not yet softmaxed."""
    return F.interpolate(logits[None].float(), size=size, mode="bilinear", align_corners=True)[0]


def fuse_pseudo_labels(offline: Tensor, online: Tensor, thresholds: Tensor) -> Tensor:
    """N×H×W labels from two N×C×H×W probability maps: argmax of their mean, 255 below ``thresholds[ŷ]``."""
    confidence, label = ((offline + online) / 2).max(1)
    return apply_class_thresholds(label, confidence, thresholds.to(confidence.device))


def soft_label_bytes(stage_dir: Path) -> dict[str, int]:
    """Bytes on disk of a soft-label stage's output by kind (``topk``, ``label``, ``conf``, ``logits``)."""
    out: dict[str, int] = {}
    for folder in (
        stage_dir / STORE_DIR / "topk",
        stage_dir / STORE_DIR / "label",
        stage_dir / STORE_DIR / "conf",
        stage_dir / LOGITS_DIR,
    ):
        if folder.is_dir():
            out[folder.name] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return out


__all__ = [
    "SoftLabels",
    "fuse_pseudo_labels",
    "logits_file",
    "offline_thresholds",
    "soft_label_bytes",
    "thresholds_path",
    "topk_logits",
    "upsampled_soft_label",
]
