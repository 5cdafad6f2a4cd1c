"""Mapillary Vistas v1.2 (shared/datasets.md §5).

``training/images/<key>.jpg`` ↔ ``training/v1.2/labels/<key>.png`` (the v2.0 package, which also carries
v1.2) or ``training/labels/<key>.png`` (old v1.x-only archives). Labels are 8-bit palette PNGs whose
indices 0–65 follow ``config_v1.2.json``; DDB's rule maps them to trainIds (``MAPILLARY_LUT``). The
v2.0 labels (124 classes) are another taxonomy and are never read. ``test`` (``testing/``) has no labels.
"""

from __future__ import annotations

from pathlib import Path

from adaptseg.data.datasets.base import LabelFiles, SegDataset, with_encoding
from adaptseg.data.datasets.encodings import MAPILLARY_PALETTE
from adaptseg.data.datasets.registry import register_dataset
from adaptseg.errors import UserError

_FOLDERS = {"train": "training", "val": "validation", "test": "testing"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@register_dataset(aliases=("mapillary_vistas",), eval_preset="mapillary-half")
class Mapillary(SegDataset):
    """Mapillary Vistas v1.2 mapped to the 19 Cityscapes classes; ids are the image keys."""

    name = "mapillary"
    splits = ("train", "val", "test")
    default_split = "train"
    unlabelled_splits = frozenset({"test"})
    label_encoding = MAPILLARY_PALETTE

    def layout_hint(self, split: str) -> str:
        return f"{_FOLDERS.get(split, split)}/images/<key>.jpg"

    def _find_images(self) -> dict[str, tuple[Path, dict]]:
        folder = self._require_dir(f"{_FOLDERS[self.split]}/images", self.layout_hint(self.split))
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())
        return {p.stem: (p, {}) for p in files}

    def _find_labels(self) -> LabelFiles:
        split = _FOLDERS[self.split]
        for candidate in (self.root / split / "v1.2" / "labels", self.root / split / "labels"):
            if candidate.is_dir():
                files = sorted(p for p in candidate.glob("*.png") if p.is_file())
                return with_encoding({p.stem: p for p in files}, MAPILLARY_PALETTE)
        if (self.root / split / "v2.0" / "labels").is_dir():
            raise UserError(
                f"only v2.0 labels under {split}/ (124 classes, another taxonomy)",
                path=self.root,
                fix=f"use the v1.2 labels ({split}/v1.2/labels/) of the same package",
            )
        raise self._missing_folder(
            f"{split}/v1.2/labels",
            f"{split}/v1.2/labels/<key>.png (or {split}/labels/<key>.png)",
            role="labels",
        )
