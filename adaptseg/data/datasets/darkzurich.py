"""Dark Zurich (shared/datasets.md §7).

Train (no labels): ``rgb_anon/train/<night|twilight|day>/<seq>/<seq>_frame_<6d>_rgb_anon.png``, night by
default (the UDA target). Val (50, labelled): ``rgb_anon/val/night/<seq>/…_rgb_anon.png`` ↔
``gt/val/night/<seq>/…_gt_labelTrainIds.png`` (shipped trainIds; ``_gt_labelIds.png`` through the
Cityscapes LUT where those are missing). Test (151, no labels): ``rgb_anon/test/night/``. Reference
images (``val_ref``, ``test_ref``) are not samples.
"""

from __future__ import annotations

from pathlib import Path

from adaptseg.data.datasets.base import LabelFiles, SegDataset, choose, collect_suffix, with_encoding
from adaptseg.data.datasets.encodings import CITYSCAPES_LABELIDS, TRAINIDS
from adaptseg.data.datasets.registry import register_dataset
from adaptseg.errors import UserError

TIMES = ("night", "twilight", "day")


@register_dataset(aliases=("dark_zurich", "dark-zurich"), eval_preset="darkzurich")
class DarkZurich(SegDataset):
    """Dark Zurich; ids are ``<time>/<seq>/<seq>_frame_<6d>``; ``meta["time"]``."""

    name = "darkzurich"
    splits = ("train", "val", "test")
    default_split = "train"
    unlabelled_splits = frozenset({"train", "test"})
    label_encoding = TRAINIDS

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        time: str = "night",
        labels: bool = True,
        strict: bool = True,
    ):
        self.time = choose("time", time, TIMES, dataset="Dark Zurich")
        if (split or self.default_split) != "train" and self.time != "night":
            raise UserError(
                f"Dark Zurich {split} has night images only (time={time!r} given)",
                fix="use time='night', or split 'train' for day/twilight images",
            )
        super().__init__(root, split, labels=labels, strict=strict)

    def layout_hint(self, split: str) -> str:
        return f"rgb_anon/{split}/{self.time}/<seq>/*_rgb_anon.png"

    def _find_images(self) -> dict[str, tuple[Path, dict]]:
        folder = self._require_dir(f"rgb_anon/{self.split}/{self.time}", self.layout_hint(self.split))
        found = collect_suffix(folder, "_rgb_anon.png", prefix=f"{self.time}/")
        return {key: (path, {"time": self.time}) for key, path in found.items()}

    def _find_labels(self) -> LabelFiles:
        relative = f"gt/{self.split}/{self.time}"
        folder = self._require_dir(relative, f"{relative}/<seq>/*_gt_labelTrainIds.png", role="labels")
        prefix = f"{self.time}/"
        label_ids = with_encoding(
            collect_suffix(folder, "_gt_labelIds.png", prefix=prefix), CITYSCAPES_LABELIDS
        )
        return label_ids | with_encoding(
            collect_suffix(folder, "_gt_labelTrainIds.png", prefix=prefix), TRAINIDS
        )
