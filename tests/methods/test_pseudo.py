"""Pseudo-labels and weights (ddb.md §7.3 quality weight; atp.md §7 pseudo_weight and downscale)."""

from __future__ import annotations

import pytest
import torch

from adaptseg.methods.parts.pseudo import (
    PLCROP_BOTTOM,
    PLCROP_TOP,
    downscale_label_ratio,
    pseudo_weight_map,
    quality_weight,
    teacher_pseudo_labels,
)


def test_teacher_pseudo_labels_are_softmax_max_and_argmax():
    # logits = log p for one pixel with p = (0.2, 0.7, 0.1) → conf 0.7, label 1
    logits = torch.log(torch.tensor([0.2, 0.7, 0.1])).view(1, 3, 1, 1).requires_grad_()
    conf, label = teacher_pseudo_labels(logits)
    assert conf.item() == pytest.approx(0.7) and label.item() == 1
    assert not conf.requires_grad and label.dtype == torch.long


def test_quality_weight_is_one_scalar_per_batch_inclusive():
    conf = torch.tensor([[[0.968, 0.9679], [0.99, 0.5]], [[0.97, 0.1], [0.2, 0.3]]])
    # ≥ 0.968 inclusive: 0.968, 0.99, 0.97 → 3 of the batch's 8 pixels = 0.375
    # (per image it would be 2/4 and 1/4: q is one scalar over the whole batch)
    q = quality_weight(conf)
    assert q.dim() == 0
    assert q.item() == pytest.approx(0.375)


def test_pseudo_weight_with_plcrop_rows_at_640():
    # atp.md §7: 640² batch with 50% of pixels ≥ 0.968 → 0.5 except rows 0–14 and 520–639
    conf = torch.full((2, 640, 640), 0.5)
    conf[:, :, :320] = 0.99
    weight = pseudo_weight_map(conf, ignore_top=PLCROP_TOP, ignore_bottom=PLCROP_BOTTOM)
    assert weight.shape == (2, 640, 640)
    assert torch.all(weight[:, :15] == 0) and torch.all(weight[:, 520:] == 0)
    assert torch.all(weight[:, 15:520] == 0.5)
    # DDB: row cropping disabled → q everywhere
    assert torch.all(pseudo_weight_map(conf) == 0.5)


def _cell(counts: dict[int, int]) -> torch.Tensor:
    values = [v for v, n in counts.items() for _ in range(n)]
    assert len(values) == 16
    return torch.tensor(values).view(4, 4)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({3: 12, 5: 4}, 3),  # 12/16 = 0.75 ≥ 0.75 keeps the class
        ({3: 11, 5: 5}, 255),  # 11/16 = 0.6875 < 0.75 → 255
        ({255: 12, 1: 4}, 255),  # majority is the ignore bin
        ({7: 16}, 7),
    ],
)
def test_downscale_by_four_with_three_quarter_share(counts, expected):
    label = _cell(counts)[None]
    assert downscale_label_ratio(label, 4, 19).tolist() == [[[expected]]]


def test_downscale_shape_640_to_160():
    label = torch.randint(0, 19, (2, 640, 640))
    out = downscale_label_ratio(label, 4, 19)
    assert out.shape == (2, 160, 160) and out.dtype == torch.long
    assert torch.equal(downscale_label_ratio(label, 1, 19), label)
