"""Cityscapes (shared/datasets.md §1).

``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` ↔
``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png`` (mapped through the labelId→trainId
LUT). A pre-converted ``_gtFine_labelTrainIds.png`` (DAFormer's converter) is used where the labelIds
file is missing. The test split ships no real labels.
"""

from __future__ import annotations

from pathlib import Path

from adaptseg.data.datasets.base import LabelFiles, SegDataset, collect_suffix, with_encoding
from adaptseg.data.datasets.encodings import CITYSCAPES_LABELIDS, TRAINIDS
from adaptseg.data.datasets.registry import register_dataset


@register_dataset(eval_preset="cityscapes-whole-1024x512")
class Cityscapes(SegDataset):
    """Cityscapes fine annotations; ids are ``<city>/<city>_<seq>_<frame>``."""

    name = "cityscapes"
    splits = ("train", "val", "test")
    default_split = "train"
    unlabelled_splits = frozenset({"test"})
    label_encoding = CITYSCAPES_LABELIDS

    def layout_hint(self, split: str) -> str:
        return f"leftImg8bit/{split}/<city>/*_leftImg8bit.png"

    def _find_images(self) -> dict[str, tuple[Path, dict]]:
        folder = self._require_dir(f"leftImg8bit/{self.split}", self.layout_hint(self.split))
        return {key: (path, {}) for key, path in collect_suffix(folder, "_leftImg8bit.png").items()}

    def _find_labels(self) -> LabelFiles:
        relative = f"gtFine/{self.split}"
        folder = self._require_dir(relative, f"{relative}/<city>/*_gtFine_labelIds.png", role="labels")
        converted = with_encoding(collect_suffix(folder, "_gtFine_labelTrainIds.png"), TRAINIDS)
        official = with_encoding(collect_suffix(folder, "_gtFine_labelIds.png"), CITYSCAPES_LABELIDS)
        return converted | official
