"""SYNTHIA-RAND-CITYSCAPES (shared/datasets.md §3).

``RGB/0000000.png`` ↔ ``GT/LABELS/0000000.png``: 16-bit 3-channel PNGs with the class id (0–22) in the R
channel, read with OpenCV (``[:, :, 2]`` of BGR) and mapped through ``SYNTHIA_LUT``. The root may be
``RAND_CITYSCAPES/`` itself or the folder that contains it. No official split: ``all``.
"""

from __future__ import annotations

from pathlib import Path

from adaptseg.data.datasets.base import LabelFiles, SegDataset, collect_numbered, with_encoding
from adaptseg.data.datasets.encodings import SYNTHIA_16BIT
from adaptseg.data.datasets.registry import register_dataset


@register_dataset()
class Synthia(SegDataset):
    """All 9,400 SYNTHIA-RAND-CITYSCAPES frames; ids are the 7-digit frame numbers."""

    name = "synthia"
    splits = ("all",)
    default_split = "all"
    label_encoding = SYNTHIA_16BIT

    def __init__(
        self, root: str | Path, split: str | None = None, *, labels: bool = True, strict: bool = True
    ):
        root = Path(root).expanduser()
        if not (root / "RGB").is_dir() and (root / "RAND_CITYSCAPES" / "RGB").is_dir():
            root = root / "RAND_CITYSCAPES"
        super().__init__(root, split, labels=labels, strict=strict)

    def layout_hint(self, split: str) -> str:
        return "RGB/<7 digits>.png"

    def _find_images(self) -> dict[str, tuple[Path, dict]]:
        folder = self._require_dir("RGB", self.layout_hint(self.split))
        return {key: (path, {}) for key, path in collect_numbered(folder).items()}

    def _find_labels(self) -> LabelFiles:
        folder = self._require_dir(
            "GT/LABELS", "GT/LABELS/<7 digits>.png (16-bit, class in R)", role="labels"
        )
        return with_encoding(collect_numbered(folder), SYNTHIA_16BIT)
