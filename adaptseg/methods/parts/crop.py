"""ATP's class-balanced crop (CBC, "prod") chosen on the teacher's pseudo-label.

Spec rule implemented here (atp.md §4 "Crops", SePiCo ``ours_transforms.RandomCrop``):

* 10 random ``crop_size`` boxes, offsets uniform in ``[0, H − h]`` × ``[0, W − w]`` (0 when the image is no
  larger than the crop, so a 640² input with a 640² crop is the identity);
* a box's score (:func:`crop_box_score`) over the non-255 labels inside it: 0 if it holds ≤ 1 class or its
  largest class has a share ≥ ``cat_max_ratio`` (0.75); else ``Σ log(count)`` over the classes with more
  than one pixel;
* the first box with the highest score wins (strict ``>``; the first box always beats the initial −1).

Only the pseudo-label is looked at: no ground truth. Quirk switches: none.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adaptseg.data.labels import IGNORE_INDEX

CBC_TRIES = 10
CBC_MAX_RATIO = 0.75

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), end-exclusive


def crop_box_score(
    label: Tensor, *, cat_max_ratio: float = CBC_MAX_RATIO, ignore_index: int = IGNORE_INDEX
) -> float:
    """Class-balance score of one label crop: ``Σ log(count)`` of its classes, or 0 if unbalanced."""
    counts = torch.bincount(label.reshape(-1).long())
    if ignore_index < counts.numel():
        counts[ignore_index] = 0
    counts = counts[counts > 0]
    if counts.numel() <= 1 or counts.max().item() / counts.sum().item() >= cat_max_ratio:
        return 0.0
    return float(sum(math.log(n) for n in counts[counts > 1].tolist()))


def random_crop_boxes(
    height: int, width: int, crop_size: tuple[int, int], generator: torch.Generator, *, num: int = CBC_TRIES
) -> list[Box]:
    """``num`` random crop boxes (y offset, then x offset, each uniform over the valid range)."""
    margin_h = max(height - crop_size[0], 0)
    margin_w = max(width - crop_size[1], 0)
    boxes = []
    for _ in range(num):
        y0 = int(torch.randint(0, margin_h + 1, (), generator=generator))
        x0 = int(torch.randint(0, margin_w + 1, (), generator=generator))
        boxes.append((y0, y0 + crop_size[0], x0, x0 + crop_size[1]))
    return boxes


def best_crop_box(
    label: Tensor, boxes: list[Box], *, cat_max_ratio: float = CBC_MAX_RATIO, ignore_index: int = IGNORE_INDEX
) -> Box:
    """The first of ``boxes`` with the highest :func:`crop_box_score` on the H×W ``label``."""
    best_score, best = -1.0, boxes[0]
    for box in boxes:
        y0, y1, x0, x1 = box
        score = crop_box_score(label[y0:y1, x0:x1], cat_max_ratio=cat_max_ratio, ignore_index=ignore_index)
        if score > best_score:
            best_score, best = score, box
    return best


def class_balanced_crop(
    images: Tensor,
    labels: Tensor,
    crop_size: tuple[int, int],
    generator: torch.Generator,
    *,
    num_tries: int = CBC_TRIES,
    cat_max_ratio: float = CBC_MAX_RATIO,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor, list[Box]]:
    """Crop every image (N×C×H×W) and pseudo-label (N×H×W) to its own class-balanced box.

    Returns the cropped images, labels and the chosen boxes (a method that regenerates the pseudo-label
    on the crop, ``regen_pseudo``, only needs the images).
    """
    _, _, height, width = images.shape
    boxes = [
        best_crop_box(
            label,
            random_crop_boxes(height, width, crop_size, generator, num=num_tries),
            cat_max_ratio=cat_max_ratio,
            ignore_index=ignore_index,
        )
        for label in labels
    ]
    cropped_images = torch.stack(
        [img[:, y0:y1, x0:x1] for img, (y0, y1, x0, x1) in zip(images, boxes, strict=True)]
    )
    cropped_labels = torch.stack(
        [lab[y0:y1, x0:x1] for lab, (y0, y1, x0, x1) in zip(labels, boxes, strict=True)]
    )
    return cropped_images, cropped_labels, boxes
