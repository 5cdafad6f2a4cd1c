"""Score a folder of prediction PNGs against a dataset split.

A prediction is a single-channel uint8 PNG of trainIds (0..C-1, 255 = no prediction) at the ground
truth's full resolution, named after its image file's stem: ``aachen_000000_000019_leftImg8bit.png``
for ``leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png``. It may lie anywhere under the
prediction folder (sub-folders are searched), but each stem must occur once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from adaptseg.data.datasets.base import image_size
from adaptseg.data.labels import IGNORE_INDEX, NUM_CLASSES
from adaptseg.errors import UserError
from adaptseg.eval.confusion import ConfusionMatrix
from adaptseg.io import read_label


class _Entry(Protocol):
    image_path: Path
    label_path: Path | None


class LabelledDataset(Protocol):
    """What scoring needs from a dataset reader (:class:`adaptseg.data.SegDataset` provides it)."""

    entries: list[_Entry]

    def __len__(self) -> int: ...

    def read_label(self, i: int) -> np.ndarray | None: ...


class PredictionIndex:
    """The prediction PNGs under a folder (recursive), looked up by image stem."""

    def __init__(self, pred_dir: str | Path):
        self.root = Path(pred_dir)
        if self.root.is_file():
            raise UserError(
                "is a file, not a folder", path=self.root, fix="pass the folder of prediction PNGs"
            )
        if not self.root.is_dir():
            raise UserError(
                "prediction folder not found", path=self.root, fix="pass the folder of prediction PNGs"
            )
        self._paths: dict[str, list[Path]] = {}
        for path in sorted(self.root.rglob("*.png")):
            if path.is_file():
                self._paths.setdefault(path.stem, []).append(path)

    def __len__(self) -> int:
        return len(self._paths)

    def find(self, image_path: str | Path) -> Path | None:
        """The prediction for an image file, or None; a UserError when the stem occurs more than once."""
        stem = Path(image_path).stem
        found = self._paths.get(stem, [])
        if len(found) > 1:
            raise UserError(
                f"{len(found)} predictions named {stem}.png: {', '.join(str(p) for p in found)}",
                path=self.root,
                fix="keep one prediction per image under the prediction folder",
            )
        return found[0] if found else None

    def match(self, dataset: LabelledDataset) -> list[Path]:
        """The prediction path of every dataset entry, in order; a UserError names the first missing one."""
        paths, missing = [], []
        for entry in dataset.entries:
            path = self.find(entry.image_path)
            if path is None:
                missing.append(entry.image_path)
            paths.append(path)
        if missing:
            first = Path(missing[0])
            raise UserError(
                f"missing prediction {first.stem}.png for image {first} "
                f"({len(missing)} of {len(paths)} images have none)",
                path=self.root,
                fix="write one trainId PNG per image, named <image stem>.png, anywhere under this folder",
            )
        return paths  # type: ignore[return-value]


def ground_truth_size_error(dataset: LabelledDataset, i: int, label_hw: tuple[int, int]) -> UserError:
    """The error for entry ``i`` whose ground truth (``label_hw``) is not the size of its image: it names
    the label file, since predictions are made at the image's size."""
    entry = dataset.entries[i]
    image_hw = image_size(entry.image_path)
    name, root = getattr(dataset, "name", "DATASET"), getattr(dataset, "root", "ROOT")
    return UserError(
        f"ground truth is {label_hw[1]}x{label_hw[0]} but its image {Path(entry.image_path).name} is "
        f"{image_hw[1]}x{image_hw[0]}",
        path=entry.label_path,
        fix=f"run `adaptseg data check {name} {root}` and replace the broken pair",
    )


def read_prediction(path: Path, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Read a prediction PNG and check that it holds trainIds (``< num_classes`` or 255)."""
    pred = read_label(path)
    present = np.flatnonzero(np.bincount(pred.ravel(), minlength=256))
    bad = present[(present >= num_classes) & (present != IGNORE_INDEX)]
    if bad.size:
        raise UserError(
            f"prediction holds value {int(bad[0])}, which is not a trainId (0..{num_classes - 1} or 255)",
            path=path,
            fix="write trainIds, not Cityscapes labelIds or palette colours",
        )
    return pred


def _score_pair(dataset: LabelledDataset, i: int, pred_path: Path, num_classes: int) -> ConfusionMatrix:
    """The confusion matrix of entry ``i`` against its prediction (run in a worker thread)."""
    target = dataset.read_label(i)
    if target is None:
        raise UserError(
            "this image has no ground truth to evaluate against",
            path=dataset.entries[i].image_path,
            fix="evaluate on a labelled split (e.g. val)",
        )
    pred = read_prediction(pred_path, num_classes)
    if pred.shape != target.shape:
        if pred.shape == image_size(dataset.entries[i].image_path):
            raise ground_truth_size_error(dataset, i, target.shape)
        raise UserError(
            f"prediction is {pred.shape[1]}x{pred.shape[0]} but the ground truth is "
            f"{target.shape[1]}x{target.shape[0]}",
            path=pred_path,
            fix="write predictions at the ground truth's full resolution",
        )
    return ConfusionMatrix(num_classes).update(pred, target)


def _progress(total: int, console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold]scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=True,
        disable=total == 0,
    )


def _ordered(
    executor: ThreadPoolExecutor, fn: Callable[..., ConfusionMatrix], jobs: list[tuple], window: int
) -> Iterator[ConfusionMatrix]:
    """Results of ``fn(*job)`` in job order, with at most ``window`` jobs submitted ahead."""
    pending: list[Future[ConfusionMatrix]] = []
    for args in jobs:
        pending.append(executor.submit(fn, *args))
        if len(pending) >= window:
            yield pending.pop(0).result()
    for future in pending:
        yield future.result()


def evaluate_predictions(
    pred_dir: str | Path,
    dataset: LabelledDataset,
    num_classes: int = NUM_CLASSES,
    *,
    workers: int | None = None,
    console: Console | None = None,
) -> tuple[ConfusionMatrix, int]:
    """Accumulate one confusion matrix over a dataset split from prediction PNGs under ``pred_dir``.

    Every image of the split needs its prediction (checked before anything is read). Returns the
    dataset-level matrix and the number of images scored. Files are decoded in ``workers`` threads
    (OpenCV releases the GIL); a Rich progress bar goes to stderr.
    """
    if len(dataset) == 0:
        raise UserError("the dataset split is empty; nothing to evaluate")
    paths = PredictionIndex(pred_dir).match(dataset)
    cm = ConfusionMatrix(num_classes)
    workers = workers or min(4, os.cpu_count() or 1)
    jobs = [(dataset, i, path, num_classes) for i, path in enumerate(paths)]
    with ThreadPoolExecutor(workers) as executor, _progress(len(jobs), console) as progress:
        task = progress.add_task("scoring", total=len(jobs))
        for image_cm in _ordered(executor, _score_pair, jobs, window=2 * workers):
            cm += image_cm
            progress.advance(task)
    return cm, len(jobs)
