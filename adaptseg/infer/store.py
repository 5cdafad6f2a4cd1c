"""The pseudo-label store: per image a trainId PNG, a confidence PNG and optionally top-k soft labels.

Layout of a store folder (ids may contain ``/``; their folders are created)::

    store.json              format version, classes, top-k settings, and its origin (:class:`StoreOrigin`:
                            the model and its weights' hash, dataset, split, inference settings)
    label/<id>.png          uint8 trainIds, 255 = ignored (a valid prediction folder for `adaptseg eval --pred`)
    conf/<id>.png           uint8 round(max probability × 255)
    topk/<id>.npz           (only with topk > 0) classes uint8 k×h×w, probs uint8 k×h×w (round(p × 255)),
                            at 1/``topk_stride`` of the image size
    cert/<id>.npz           (only with ``certainty``) ``certainty``: uint8 H×W×C per-class certainty
                            floor(100·p), EnD's teacher format (end.md §2.1), zlib-compressed

Quantisation: a probability p is stored as q = round(255·p) and read back as q/255, so the error is at
most 0.5/255 ≈ 0.002 — finer than any threshold the methods use (DACS' 0.968, DecoupleNet's per-class
percentiles) can notice, and a PNG stays one byte per pixel before compression. Top-k soft labels keep the
k most likely classes per pixel (the rest of the mass is almost always negligible) in a zlib-compressed
``.npz`` (lossless on the quantised values, readable with plain NumPy); storing them at a stride of 4
cuts them 16× and matches what soft-label methods keep anyway (DecoupleNet saves its logits at 1/8).

Every file is written atomically (temporary file + rename). An image is *complete* when all its files
exist and end with their format's end marker (PNG ``IEND``, zip end-of-directory), so an interrupted run
resumes by skipping complete images and redoing the rest; temporary files left by a killed run are
deleted when the store is opened for writing. A writer whose origin differs from the recorded one is
refused (a resumed run never mixes two models' labels); :func:`remove_store` starts a store over.
Methods read labels and confidences and apply their own selection rules (class-wise percentile
thresholds, DACS' confidence fraction, …) at read time.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from adaptseg.data.labels import IGNORE_INDEX
from adaptseg.errors import UserError, os_errors_as_user_errors
from adaptseg.io import atomic_path, read_label, write_json_atomic, write_png

STORE_VERSION = 1
#: what a store folder may hold: its record, and one sub-folder per kind with the files of that kind
STORE_FILES: dict[str, tuple[str, ...]] = {
    "label": (".png",),
    "conf": (".png",),
    "topk": (".npz",),
    "cert": (".npz",),
}
#: the per-class certainty scale (EnD, end.md §2.1: "map to 0–100, store as bytes")
CERTAINTY_SCALE = 100
_MISMATCH_FIX = "write to another --out folder, or pass --force to start this store over"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_ZIP_END = b"PK\x05\x06"


class TopK(NamedTuple):
    """The k most likely classes per pixel at 1/``stride`` resolution, most likely first."""

    classes: np.ndarray  # uint8 k×h×w
    probs: np.ndarray  # float32 k×h×w, dequantised (multiples of 1/255)
    stride: int


class PseudoLabel(NamedTuple):
    label: np.ndarray  # uint8 H×W trainIds, 255 = ignored
    confidence: np.ndarray  # float32 H×W in [0, 1], multiples of 1/255
    topk: TopK | None


def quantise(p: np.ndarray | Tensor) -> np.ndarray:
    """Probabilities in [0, 1] → uint8 round(255·p)."""
    if isinstance(p, Tensor):
        return (p.float() * 255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
    return np.clip(np.rint(np.asarray(p, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def dequantise(q: np.ndarray) -> np.ndarray:
    """uint8 → float32 probabilities (q / 255)."""
    return q.astype(np.float32) / 255.0


def certainty_levels(probs: Tensor) -> np.ndarray:
    """C×H×W probabilities → uint8 H×W×C certainties floor(100·p) (end.md §2.1; p = 0.999 → 99)."""
    levels = (probs.float() * CERTAINTY_SCALE).floor_().clamp_(0, CERTAINTY_SCALE).to(torch.uint8)
    return levels.permute(1, 2, 0).contiguous().cpu().numpy()


def check_id(image_id: str) -> PurePosixPath:
    """An id as a safe relative path (no absolute paths, no ``..``), or a UserError."""
    parts = image_id.split("/")
    if not image_id or "\\" in image_id or any(part in ("", ".", "..") for part in parts):
        raise UserError(
            f"image id {image_id!r} cannot name a file in the store", fix="use ids like 'city/name'"
        )
    return PurePosixPath(image_id)


def write_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """A zlib-compressed ``.npz`` of ``arrays``, written atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _ends_with(path: Path, marker: bytes, offset: int = 0) -> bool:
    """Whether the file ends with ``marker`` (``offset`` bytes before its end)."""
    try:
        size = path.stat().st_size
        if size < len(marker) + offset:
            return False
        with open(path, "rb") as f:
            f.seek(size - len(marker) - offset)
            return f.read(len(marker)) == marker
    except OSError:
        return False


#: inference settings that do not change the labels (how fast, not what): left out of a store's origin
_SPEED_SETTINGS = (
    "batch_size",
    "workers",
    "prefetch",
    "backend.compile",
    "backend.channels_last",
    "auto_batch.max_size",
    "auto_batch.memory_mib",
    "auto_batch.repeats",
)
#: the file a trained run keeps its deployable weights in (one per stage)
_RUN_WEIGHTS = "student.safetensors"


def model_sha256(model: str | Path) -> str | None:
    """A hash of the bytes that define a ``--model``: a weights or artifact file, every file of an export
    folder, every ``student.safetensors`` of a run folder; ``None`` for a preset name (random weights)."""
    path = Path(model).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        pattern = "*" if (path / "model.json").is_file() else f"**/{_RUN_WEIGHTS}"
        files = sorted(p for p in path.glob(pattern) if p.is_file())
    else:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass(frozen=True)
class StoreOrigin:
    """What makes a store's pseudo-labels: the model (and the hash of its bytes), the data and the
    inference settings that change the labels (the preset with its ``--set`` overrides, TTA included)."""

    model: str  #: as given (``--model``)
    model_sha256: str | None  #: :func:`model_sha256`; ``None`` for a preset name's random weights
    dataset: str
    split: str
    preset: str | None  #: as given (``--preset``; ``None``: the dataset's protocol preset)
    inference: dict[str, Any] = field(
        default_factory=dict
    )  #: flat ``key: value`` settings that change labels

    @classmethod
    def of(cls, model: str | Path, dataset: Any, preset: str | Path | None, config: Any) -> StoreOrigin:
        """The origin of labelling ``dataset`` (``name``, ``split``) with ``model`` and inference ``config``."""
        settings = _flatten(config.model_dump(mode="json"))
        inference = {k: v for k, v in settings.items() if k not in _SPEED_SETTINGS}
        return cls(
            str(model),
            model_sha256(model),
            dataset.name,
            str(dataset.split),
            None if preset is None else str(preset),
            inference,
        )

    def differences(self, recorded: Mapping[str, Any]) -> Iterator[tuple[str, Any, Any]]:
        """``(field, recorded value, this value)`` for every fact that differs from a recorded origin.

        The model is compared by the hash of its bytes when both have one (a moved run folder is the
        same model), else by name; the preset by the settings it resolves to, not by its name.
        """
        if self.model_sha256 is not None and recorded.get("model_sha256") is not None:
            if recorded["model_sha256"] != self.model_sha256:
                yield "model", recorded.get("model"), f"{self.model} (other weights)"
        elif recorded.get("model") != self.model or recorded.get("model_sha256") != self.model_sha256:
            yield "model", recorded.get("model"), self.model
        for name in ("dataset", "split"):
            if recorded.get(name) != getattr(self, name):
                yield name, recorded.get(name), getattr(self, name)
        had = recorded.get("inference") if isinstance(recorded.get("inference"), dict) else {}
        for key in sorted(set(had) | set(self.inference)):
            if had.get(key) != self.inference.get(key):
                yield f"preset {key}", had.get(key), self.inference.get(key)


def remove_store(root: str | Path) -> bool:
    """Delete a pseudo-label store (``--force``) after proving the folder is one; returns whether
    anything was deleted.

    A folder that holds anything a store does not (another file, another kind of file under ``label/``)
    or has no readable ``store.json`` is refused with a :class:`UserError`, and nothing is deleted. The
    record goes last, so an interrupted removal leaves a folder that is still provably a store.
    """
    root = Path(root)
    if not root.exists():
        return False
    fix = "choose another --out folder, or delete this one yourself"
    if not root.is_dir():
        raise UserError("--force refused: this is a file, not a pseudo-label store", path=root, fix=fix)
    entries = list(root.iterdir())
    if not entries:
        return False
    foreign = [
        p
        for p in entries
        if not (p.is_file() if p.name == "store.json" else p.name in STORE_FILES and p.is_dir())
    ]
    for kind, suffixes in STORE_FILES.items():
        if (root / kind).is_dir():
            foreign += [
                p
                for p in (root / kind).rglob("*")
                if p.is_file() and not p.name.startswith(".") and p.suffix not in suffixes
            ]
    if foreign:
        names = ", ".join(sorted(p.relative_to(root).as_posix() for p in foreign)[:3])
        raise UserError(
            f"--force refused: this folder is not a pseudo-label store (it holds {names})", path=root, fix=fix
        )
    if not (root / "store.json").is_file():
        raise UserError(
            "--force refused: no store.json, so this folder is not a pseudo-label store", path=root, fix=fix
        )
    PseudoLabelStore(root)  # store.json must read as a store of this version (a UserError otherwise)
    for kind in STORE_FILES:
        if (root / kind).is_dir():
            shutil.rmtree(root / kind)
    (root / "store.json").unlink()
    return True


class PseudoLabelStore:
    """Write and read pseudo-labels of one model on one dataset split (see the module docstring).

    Args:
        root: the store folder.
        topk: soft-label classes to keep per pixel (0: none). When writing into an existing store it
            must match what ``store.json`` says.
        topk_stride: the soft labels' subsampling (probabilities are averaged over stride×stride cells).
        origin: what makes the pseudo-labels; recorded in ``store.json`` by the first writer, and a
            later writer's must match it (so a resumed run never mixes two models' labels).
        certainty: also keep every class's certainty floor(100·p) per pixel (``cert/``, EnD's teachers).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        topk: int | None = None,
        topk_stride: int | None = None,
        origin: StoreOrigin | None = None,
        certainty: bool | None = None,
    ):
        self.root = Path(root)
        info = self._read_info()
        if info is not None:
            self.num_classes: int | None = info.get("num_classes")
            self.topk = int(info.get("topk", 0))
            self.topk_stride = int(info.get("topk_stride", 1))
            self.certainty = bool(info.get("certainty", False))
            for name, asked, have in (
                ("topk", topk, self.topk),
                ("topk_stride", topk_stride, self.topk_stride),
                ("certainty", certainty, self.certainty),
            ):
                if asked is not None and asked != have:
                    raise UserError(
                        f"this store was written with {name}={have}, not {asked}",
                        path=self.root / "store.json",
                        fix=_MISMATCH_FIX,
                    )
        else:
            self.num_classes = None
            self.topk = int(topk or 0)
            self.topk_stride = int(topk_stride or 1)
            self.certainty = bool(certainty)
        if self.topk < 0 or self.topk_stride < 1:
            raise ValueError("topk must be >= 0 and topk_stride >= 1")
        self.origin = origin

    # -- paths and completeness ---------------------------------------------------------------------
    def paths(self, image_id: str) -> dict[str, Path]:
        """Where the files of ``image_id`` go: ``label``, ``conf``, (with top-k) ``topk``, (with certainty) ``cert``."""
        rel = check_id(image_id)
        out = {"label": self.root / "label" / f"{rel}.png", "conf": self.root / "conf" / f"{rel}.png"}
        if self.topk:
            out["topk"] = self.root / "topk" / f"{rel}.npz"
        if self.certainty:
            out["cert"] = self.root / "cert" / f"{rel}.npz"
        return out

    def is_complete(self, image_id: str) -> bool:
        """Whether every file of ``image_id`` exists and is whole (ends with its format's end marker)."""
        for path in self.paths(image_id).values():
            ok = (
                _ends_with(path, _ZIP_END, offset=18) if path.suffix == ".npz" else _ends_with(path, _PNG_END)
            )
            if not ok:
                return False
        return True

    def __contains__(self, image_id: str) -> bool:
        return self.is_complete(image_id)

    def ids(self) -> list[str]:
        """Ids of the complete images in the store, sorted."""
        folder = self.root / "label"
        if not folder.is_dir():
            return []
        found = (p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.png"))
        return sorted(i for i in found if not PurePosixPath(i).name.startswith(".") and self.is_complete(i))

    def clean_temporary(self) -> int:
        """Delete temporary files a killed writer left behind; returns how many."""
        removed = 0
        for kind in STORE_FILES:
            folder = self.root / kind
            if folder.is_dir():
                for path in folder.rglob(".*.tmp*"):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- writing --------------------------------------------------------------------------------------
    def open_for_writing(self, num_classes: int, *, clean: bool = True) -> None:
        """Create the folder and ``store.json`` (or check it matches), and drop stale temporary files.

        ``clean=False`` leaves temporary files alone: what the other ranks of a ``torchrun`` run do once
        rank 0 has opened the store, since by then a temporary file may be a rank's write in flight.
        """
        info = self._read_info()
        if info is not None and info.get("num_classes") not in (None, num_classes):
            raise UserError(
                f"this store holds {info['num_classes']}-class pseudo-labels, not {num_classes}",
                path=self.root / "store.json",
                fix=_MISMATCH_FIX,
            )
        if info is not None and self.origin is not None:
            self._check_origin(info)
        with os_errors_as_user_errors(self.root):
            self.root.mkdir(parents=True, exist_ok=True)
            if clean:
                self.clean_temporary()
        self.num_classes = num_classes
        if info is None:
            path = self.root / "store.json"
            with os_errors_as_user_errors(path):
                write_json_atomic(
                    path,
                    {
                        "version": STORE_VERSION,
                        "num_classes": num_classes,
                        "topk": self.topk,
                        "topk_stride": self.topk_stride,
                        "certainty": self.certainty,
                        "confidence": "uint8 round(255 * max probability)",
                        **({"origin": asdict(self.origin)} if self.origin is not None else {}),
                    },
                )

    def _check_origin(self, info: Mapping[str, Any]) -> None:
        """A UserError naming the first fact of ``self.origin`` that differs from what made the store."""
        path = self.root / "store.json"
        recorded = info.get("origin")
        if not isinstance(recorded, dict):
            raise UserError(
                "this store does not record which model, data and settings made it",
                path=path,
                fix=_MISMATCH_FIX,
            )
        assert self.origin is not None
        for name, had, asked in self.origin.differences(recorded):
            raise UserError(
                f"this store was written with {name}={had!r}, not {asked!r}", path=path, fix=_MISMATCH_FIX
            )

    def write(self, image_id: str, probs: Tensor, ignore: Tensor | np.ndarray | None = None) -> None:
        """Store the pseudo-label of one image from its C×H×W probabilities (``ignore``: H×W bool → 255)."""
        if probs.ndim != 3:
            raise ValueError(f"expected C×H×W probabilities, got shape {tuple(probs.shape)}")
        if self.num_classes is None:
            self.open_for_writing(probs.shape[0])
        confidence, label = probs.max(0)
        label = label.to(torch.uint8).cpu().numpy()
        if ignore is not None:
            label[np.asarray(ignore.cpu() if isinstance(ignore, Tensor) else ignore, dtype=bool)] = (
                IGNORE_INDEX
            )
        paths = self.paths(image_id)
        if self.topk:
            with os_errors_as_user_errors(paths["topk"]):
                self._write_topk(paths["topk"], probs)
        if self.certainty:
            with os_errors_as_user_errors(paths["cert"]):
                write_npz_atomic(paths["cert"], certainty=certainty_levels(probs))
        with os_errors_as_user_errors(paths["conf"]):
            write_png(paths["conf"], quantise(confidence))
        with os_errors_as_user_errors(paths["label"]):  # last: a label marks the image as written
            write_png(paths["label"], label)

    def _write_topk(self, path: Path, probs: Tensor) -> None:
        k = min(self.topk, probs.shape[0])
        if self.topk_stride > 1:
            probs = F.avg_pool2d(probs[None].float(), self.topk_stride, ceil_mode=True)[0]
        values, classes = probs.topk(k, dim=0)
        write_npz_atomic(path, classes=classes.to(torch.uint8).cpu().numpy(), probs=quantise(values))

    # -- reading ----------------------------------------------------------------------------------------
    def read(self, image_id: str) -> PseudoLabel:
        """``(label, confidence, topk)`` of one image; ``topk`` is None when the store keeps none."""
        paths = self.paths(image_id)
        if not self.is_complete(image_id):
            raise UserError(
                f"no complete pseudo-label for {image_id!r} in this store",
                path=self.root,
                fix="run `adaptseg pseudo-label` again (it resumes) for this split",
            )
        label = read_label(paths["label"])
        confidence = dequantise(read_label(paths["conf"]))
        topk = None
        if "topk" in paths:
            with np.load(paths["topk"]) as data:
                topk = TopK(data["classes"], dequantise(data["probs"]), self.topk_stride)
        return PseudoLabel(label, confidence, topk)

    def read_certainty(self, image_id: str) -> np.ndarray:
        """The uint8 H×W×C per-class certainties floor(100·p) of one image (a store written with ``certainty``)."""
        if not self.certainty:
            raise UserError(
                "this store keeps no per-class certainties",
                path=self.root / "store.json",
                fix="write it again with certainties (EnD's teacher pass does)",
            )
        path = self.paths(image_id)["cert"]
        if not self.is_complete(image_id):
            raise UserError(
                f"no complete certainties for {image_id!r} in this store",
                path=self.root,
                fix="run the teacher pass again (it resumes) for this split",
            )
        try:
            with np.load(path) as data:
                return data["certainty"]
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(
                f"unreadable certainty file ({exc})",
                path=path,
                fix="delete it and run the teacher pass again (it resumes)",
            ) from None

    def __iter__(self) -> Iterator[tuple[str, PseudoLabel]]:
        for image_id in self.ids():
            yield image_id, self.read(image_id)

    def _read_info(self) -> dict[str, Any] | None:
        path = self.root / "store.json"
        if not path.is_file():
            return None
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(
                f"unreadable store.json ({exc})", path=path, fix="delete the store and write it again"
            ) from None
        if not isinstance(info, dict) or info.get("version") != STORE_VERSION:
            raise UserError(
                "not a pseudo-label store of this version", path=path, fix="write to a new folder"
            )
        return info
