"""Synscapes (shared/datasets.md §4).

``img/rgb/{n}.png`` ↔ ``img/class/{n}.png`` (single-channel Cityscapes labelIds), 1-based and **not
zero-padded**: pairing is by stem and order is numeric (``2`` before ``10``). DDB's converted
``img/class/{n}_gt_labelTrainIds.png`` is used where ``{n}.png`` is missing. No official split.
"""

from __future__ import annotations

from pathlib import Path

from adaptseg.data.datasets.base import LabelFiles, SegDataset, collect_numbered, with_encoding
from adaptseg.data.datasets.encodings import CITYSCAPES_LABELIDS, TRAINIDS
from adaptseg.data.datasets.registry import register_dataset


@register_dataset()
class Synscapes(SegDataset):
    """All 25,000 Synscapes frames (native 1440×720 ``img/rgb``); ids are the frame numbers."""

    name = "synscapes"
    splits = ("all",)
    default_split = "all"
    label_encoding = CITYSCAPES_LABELIDS

    def layout_hint(self, split: str) -> str:
        return "img/rgb/{n}.png"

    def _find_images(self) -> dict[str, tuple[Path, dict]]:
        folder = self._require_dir("img/rgb", self.layout_hint(self.split))
        return {key: (path, {}) for key, path in collect_numbered(folder).items()}

    def _find_labels(self) -> LabelFiles:
        folder = self._require_dir("img/class", "img/class/{n}.png (labelIds)", role="labels")
        converted = with_encoding(collect_numbered(folder, "_gt_labelTrainIds.png"), TRAINIDS)
        return converted | with_encoding(collect_numbered(folder), CITYSCAPES_LABELIDS)
