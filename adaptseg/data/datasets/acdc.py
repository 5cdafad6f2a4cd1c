"""ACDC — adverse conditions fog, night, rain, snow (shared/datasets.md §6).

The official nested tree, not DAFormer's flattened copy, so the condition survives (per-condition mIoU):
``rgb_anon/<cond>/<split>/<seq>/<seq>_frame_<6d>_rgb_anon.png`` ↔
``gt/<cond>/<split>/<seq>/<seq>_frame_<6d>_gt_labelTrainIds.png`` (shipped trainIds; ``_gt_labelIds.png``
through the Cityscapes LUT where those are missing). Reference images (``<split>_ref``) are not samples.
The test split has no public labels.
"""

from __future__ import annotations

from pathlib import Path

from adaptseg.data.datasets.base import LabelFiles, SegDataset, choose, collect_suffix, with_encoding
from adaptseg.data.datasets.encodings import CITYSCAPES_LABELIDS, TRAINIDS
from adaptseg.data.datasets.registry import register_dataset

CONDITIONS = ("fog", "night", "rain", "snow")


@register_dataset(eval_preset="acdc")
class ACDC(SegDataset):
    """ACDC per condition or all four; ids are ``<cond>/<seq>/<seq>_frame_<6d>``; ``meta["condition"]``."""

    name = "acdc"
    splits = ("train", "val", "test")
    default_split = "train"
    unlabelled_splits = frozenset({"test"})
    label_encoding = TRAINIDS

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        condition: str = "all",
        labels: bool = True,
        strict: bool = True,
    ):
        self.condition = choose("condition", condition, (*CONDITIONS, "all"), dataset="ACDC")
        super().__init__(root, split, labels=labels, strict=strict)

    @property
    def conditions(self) -> tuple[str, ...]:
        """The conditions read: the chosen one, or (for ``all``) every condition present in the tree."""
        if self.condition != "all":
            return (self.condition,)
        return tuple(c for c in CONDITIONS if (self.root / "rgb_anon" / c / self.split).is_dir())

    def layout_hint(self, split: str) -> str:
        cond = "<fog|night|rain|snow>" if self.condition == "all" else self.condition
        return f"rgb_anon/{cond}/{split}/<seq>/*_rgb_anon.png"

    def _find_images(self) -> dict[str, tuple[Path, dict]]:
        if not self.conditions:
            raise self._missing_folder(f"rgb_anon/<condition>/{self.split}", self.layout_hint(self.split))
        images: dict[str, tuple[Path, dict]] = {}
        for cond in self.conditions:
            folder = self._require_dir(f"rgb_anon/{cond}/{self.split}", self.layout_hint(self.split))
            for key, path in collect_suffix(folder, "_rgb_anon.png", prefix=f"{cond}/").items():
                images[key] = (path, {"condition": cond})
        return images

    def _find_labels(self) -> LabelFiles:
        labels: LabelFiles = {}
        for cond in self.conditions:
            relative = f"gt/{cond}/{self.split}"
            folder = self._require_dir(relative, f"{relative}/<seq>/*_gt_labelTrainIds.png", role="labels")
            prefix = f"{cond}/"
            labels |= with_encoding(
                collect_suffix(folder, "_gt_labelIds.png", prefix=prefix), CITYSCAPES_LABELIDS
            )
            labels |= with_encoding(collect_suffix(folder, "_gt_labelTrainIds.png", prefix=prefix), TRAINIDS)
        return labels
