"""Small real inputs for the evaluation tests: a Cityscapes-layout split and imperfect predictions.

Ground truth is written as official ``*_gtFine_labelIds.png`` (including ignored labelIds), so the real
Cityscapes reader maps it to trainIds and cityscapesScripts can read the very same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from adaptseg.data.labels import CITYSCAPES_LUT, IGNORE_INDEX, NUM_CLASSES
from adaptseg.io import read_label, write_png

#: labelIds used in the ground truth: every evaluated class except bus (28) and train (31), plus
#: ignored ids (0 unlabeled, 4 static, 6 ground, 9 parking, 15 bridge).
GT_LABEL_IDS = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 32, 33, 0, 4, 6, 9, 15])
BUS, TRAIN = 15, 16  # trainIds: bus is only ever predicted (IoU 0), train appears nowhere (no IoU)


@dataclass(frozen=True)
class Item:
    city: str
    stem: str  # image file stem, e.g. "frankfurt_000000_000003_leftImg8bit"
    image_path: Path
    labelids: np.ndarray
    trainids: np.ndarray


def make_cityscapes(
    root: Path, n_images: int = 4, size: tuple[int, int] = (48, 64), seed: int = 0, split: str = "val"
) -> list[Item]:
    """Write ``leftImg8bit/<split>`` and ``gtFine/<split>`` for ``n_images`` blocky random scenes."""
    rng = np.random.default_rng(seed)
    h, w = size
    items = []
    for i in range(n_images):
        city = ("frankfurt", "lindau", "munster")[i % 3]
        base = f"{city}_{i:06d}_{19 + i:06d}"
        coarse = rng.choice(GT_LABEL_IDS, size=(6, 8)).astype(np.uint8)
        labelids = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST)
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        image_path = root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png"
        write_png(image_path, image)
        write_png(root / "gtFine" / split / city / f"{base}_gtFine_labelIds.png", labelids)
        items.append(Item(city, image_path.stem, image_path, labelids, CITYSCAPES_LUT[labelids]))
    return items


def read_items(root: Path, split: str = "val") -> list[Item]:
    """The items of an existing Cityscapes-layout split (e.g. one written by MiniCity), sorted by stem."""
    items = []
    for gt in sorted((root / "gtFine" / split).glob("*/*_gtFine_labelIds.png")):
        base = gt.name[: -len("_gtFine_labelIds.png")]
        image_path = root / "leftImg8bit" / split / gt.parent.name / f"{base}_leftImg8bit.png"
        labelids = read_label(gt)
        items.append(Item(gt.parent.name, image_path.stem, image_path, labelids, CITYSCAPES_LUT[labelids]))
    return items


def relabel(root: Path, items: list[Item], mapping: dict[int, int], split: str = "val") -> list[Item]:
    """Rewrite the ground truth with labelIds replaced by ``mapping`` (e.g. to remove a class)."""
    lut = np.arange(256, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    out = []
    for item in items:
        labelids = lut[item.labelids]
        base = item.stem[: -len("_leftImg8bit")]
        write_png(root / "gtFine" / split / item.city / f"{base}_gtFine_labelIds.png", labelids)
        out.append(Item(item.city, item.stem, item.image_path, labelids, CITYSCAPES_LUT[labelids]))
    return out


def corrupt(trainids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An imperfect prediction: wrong classes in random boxes and pixels, some 255 (no prediction),
    a bus box (a class absent from the ground truth), and arbitrary classes on ignored pixels."""
    pred = trainids.copy()
    h, w = pred.shape
    classes = np.array([c for c in range(NUM_CLASSES) if c != TRAIN])
    ignored = pred == IGNORE_INDEX
    pred[ignored] = rng.choice(classes, size=int(ignored.sum()))
    for _ in range(3):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        pred[y : y + 8, x : x + 8] = rng.choice(classes)
    noise = rng.random(pred.shape) < 0.1
    pred[noise] = rng.choice(classes, size=int(noise.sum()))
    pred[rng.random(pred.shape) < 0.03] = IGNORE_INDEX
    pred[:4, :4] = BUS
    return pred


def write_predictions(
    pred_dir: Path, items: list[Item], preds: list[np.ndarray], by_city: bool = True
) -> None:
    """Write trainId predictions named ``<image stem>.png`` (in per-city sub-folders by default)."""
    for item, pred in zip(items, preds, strict=True):
        folder = pred_dir / item.city if by_city else pred_dir
        write_png(folder / f"{item.stem}.png", pred)
