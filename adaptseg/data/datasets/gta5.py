"""GTA5 (shared/datasets.md §2).

``images/00001.png`` ↔ ``labels/00001.png``: labels are 8-bit palette PNGs whose *indices* are Cityscapes
labelIds (read with Pillow, mapped through the labelId→trainId LUT). Generated files such as
``labels/00001_labelTrainIds.png`` are never paired. Some labels disagree in size with their image
(§10): they are resized to the image (nearest) with a warning, and ``data check`` reports them.

Splits: ``all`` (DAFormer trains on all 24,966 images; the default) and ``train``/``val``/``test`` from
cycada's ``split.mat`` (``trainIds``/``valIds``/``testIds``, 1-based). Without ``split.mat``, a text
file ``<split>.txt`` in the root with one id per line (``17``, ``00017`` or ``00017.png``) defines it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptseg.data.datasets.base import LabelFiles, SegDataset, collect_numbered, with_encoding
from adaptseg.data.datasets.encodings import GTA5_PALETTE
from adaptseg.data.datasets.matfile import read_mat_arrays
from adaptseg.data.datasets.registry import register_dataset
from adaptseg.errors import UserError


@register_dataset(aliases=("gta",))
class GTA5(SegDataset):
    """GTA5 (Playing for Data); ids are the 5-digit frame numbers (``00001``)."""

    name = "gta5"
    splits = ("all", "train", "val", "test")
    default_split = "all"
    label_encoding = GTA5_PALETTE
    resize_mismatched_labels = True
    check_splits = ("all",)  # train/val/test are subsets of all: check them with --split

    def layout_hint(self, split: str) -> str:
        return "images/<5 digits>.png"

    def _find_images(self) -> dict[str, tuple[Path, dict]]:
        folder = self._require_dir("images", self.layout_hint(self.split))
        images = {key: (path, {}) for key, path in collect_numbered(folder).items()}
        if self.split == "all":
            return images
        listed = self._split_ids()
        self.missing_images = [key for key in listed if key not in images]
        self._members = {key for key in listed if key in images}
        return {key: images[key] for key in listed if key in images}

    def _find_labels(self) -> LabelFiles:
        folder = self._require_dir("labels", "labels/<5 digits>.png (palette PNGs)", role="labels")
        labels = with_encoding(collect_numbered(folder), GTA5_PALETTE)
        if self.split == "all":
            return labels
        # a subset split owns only the labels of its images (its missing images are reported apart)
        return {key: value for key, value in labels.items() if key in self._members}

    def _split_ids(self) -> list[str]:
        """The 5-digit ids of the split, from ``split.mat`` or ``<split>.txt``, sorted numerically."""
        mat, txt = self.root / "split.mat", self.root / f"{self.split}.txt"
        if mat.is_file():
            arrays = read_mat_arrays(mat)
            key = f"{self.split}Ids"
            if key not in arrays:
                raise UserError(
                    f"split.mat has no {key!r} array (found {sorted(arrays)})",
                    path=mat,
                    fix="use cycada's split.mat, or use the 'all' split",
                )
            numbers = np.asarray(arrays[key]).ravel()
            if numbers.size and (np.any(numbers < 1) or np.any(numbers != np.round(numbers))):
                raise UserError(f"{key} holds values that are not 1-based ids", path=mat)
            ids = [int(n) for n in numbers]
        elif txt.is_file():
            ids = [_parse_id(line, txt) for line in txt.read_text().splitlines() if line.strip()]
        else:
            raise UserError(
                f"the GTA5 {self.split!r} split needs split.mat (cycada) or {self.split}.txt in the root",
                path=self.root,
                fix="add one of them, or use split 'all' (all images, as DAFormer trains)",
            )
        return [f"{n:05d}" for n in sorted(set(ids))]


def _parse_id(line: str, source: Path) -> int:
    text = line.strip().removesuffix(".png").rsplit("/", 1)[-1]
    if not text.isdigit():
        raise UserError(f"{text!r} is not a GTA5 id", path=source, fix="write one id per line, e.g. 00017")
    return int(text)
