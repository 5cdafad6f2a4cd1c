"""ATP class-balanced crop (atp.md §7 "CBC crop")."""

from __future__ import annotations

import math

import pytest
import torch

from adaptseg.methods.parts.crop import best_crop_box, class_balanced_crop, crop_box_score, random_crop_boxes


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _label(counts: dict[int, int]) -> torch.Tensor:
    return torch.tensor([v for v, n in counts.items() for _ in range(n)])


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({0: 6, 1: 3, 255: 7}, math.log(6) + math.log(3)),  # 255 dropped; share 6/9 < 0.75 → ln 18 = 2.890372
        ({0: 5, 1: 4, 2: 1}, math.log(5) + math.log(4)),  # class with 1 pixel left out of the sum: ln 20
        ({0: 8, 1: 2}, 0.0),  # largest share 0.8 ≥ 0.75
        ({0: 3, 1: 1}, 0.0),  # exactly 0.75 is not balanced
        ({4: 10, 255: 30}, 0.0),  # one class
        ({1: 1, 2: 1}, 0.0),  # balanced, but no class with > 1 pixel
    ],
)
def test_crop_score(counts, expected):
    assert crop_box_score(_label(counts)) == pytest.approx(expected)


def test_identity_on_640_input():
    images = torch.randn(2, 3, 640, 640)
    labels = torch.randint(0, 19, (2, 640, 640))
    assert random_crop_boxes(640, 640, (640, 640), _gen(0)) == [(0, 640, 0, 640)] * 10
    out_images, out_labels, boxes = class_balanced_crop(images, labels, (640, 640), _gen(0))
    assert torch.equal(out_images, images) and torch.equal(out_labels, labels)
    assert boxes == [(0, 640, 0, 640)] * 2


def test_prefers_balanced_box_and_first_best_wins():
    label = torch.zeros(4, 8, dtype=torch.long)
    label[:, 4:6] = 1
    label[:, 6:] = 2
    left, right = (0, 4, 0, 4), (0, 4, 4, 8)
    # left: one class → 0; right: 8 + 8 pixels of two classes → ln 8 + ln 8
    assert best_crop_box(label, [left, right]) == right
    assert best_crop_box(label, [right, (0, 4, 4, 8)]) is not None
    shifted = (
        0,
        4,
        3,
        7,
    )  # 1·4 class 0, 8 class 1, 4 class 2: largest share 0.5 → ln 4 + ln 8 + ln 4 > ln 64
    assert best_crop_box(label, [right, shifted]) == shifted
    # ties: the first of equal scores wins (strict >), also when every score is 0
    assert best_crop_box(label, [(0, 4, 4, 8), (0, 2, 4, 8)]) == (0, 4, 4, 8)
    assert best_crop_box(label, [left, (0, 4, 1, 5)]) == left


def test_random_boxes_cover_the_valid_range():
    boxes = [b for seed in range(30) for b in random_crop_boxes(10, 12, (4, 5), _gen(seed))]
    ys = {b[0] for b in boxes}
    xs = {b[2] for b in boxes}
    assert ys == set(range(7)) and xs == set(range(8))  # offsets uniform over [0, 6] × [0, 7]
    assert all(b[1] - b[0] == 4 and b[3] - b[2] == 5 for b in boxes)


def test_crop_keeps_image_and_label_aligned():
    labels = torch.randint(0, 5, (3, 20, 24))
    images = labels.unsqueeze(1).float().expand(-1, 3, -1, -1)
    out_images, out_labels, boxes = class_balanced_crop(images, labels, (8, 10), _gen(1))
    assert out_images.shape == (3, 3, 8, 10) and out_labels.shape == (3, 8, 10)
    assert torch.equal(out_images[:, 0].long(), out_labels)
    for lab, (y0, y1, x0, x1), out in zip(labels, boxes, out_labels, strict=True):
        assert torch.equal(lab[y0:y1, x0:x1], out)
