"""Mixing masks, mixed images/labels/weights (ddb.md §7 tests 1–3, atp.md §7 "ClassMix")."""

from __future__ import annotations

import math

import pytest
import torch

from adaptseg.methods.parts.mix import (
    batch_class_mix_masks,
    class_mix_mask,
    cut_mix_box,
    cut_mix_mask,
    mix_images,
    mix_labels,
    mixed_pixel_weight,
    zero_mix_mask,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- cut (ddb.md §7.1)


@pytest.mark.parametrize(
    ("u", "position", "expected"),
    [
        # u=0: h = 0.4^0 = 1, w = 0.4 → size (100, 40); top-left round((0, 60)·(0.5, 0.5)) = (0, 30)
        (0.0, (0.5, 0.5), (0, 30, 100, 70)),
        # u=1: h = 0.4, w = 1 → size (40, 100); top-left round((60·0.25, 0·0.9)) = (15, 0)
        (1.0, (0.25, 0.9), (15, 0, 55, 100)),
        # u=0.5: h = w = √0.4 = 0.63246 → size round(63.246) = 63; top-left round(37·0.5) = round(18.5) = 18
        # (half to even, as np.round)
        (0.5, (0.5, 0.5), (18, 18, 81, 81)),
    ],
)
def test_cut_box_hand_computed(u, position, expected):
    assert cut_mix_box(100, 100, u, position) == expected


def test_cut_box_area_at_512():
    # u=0.5 at 512²: size round(0.63246·512) = round(323.82) = 324 → area 324²/512² = 0.40045
    y0, x0, y1, x1 = cut_mix_box(512, 512, 0.5, (0.0, 0.0))
    assert (y1 - y0, x1 - x0) == (324, 324)
    assert (y1 - y0) * (x1 - x0) / 512**2 == pytest.approx(0.40045, abs=1e-5)


def test_cut_mask_is_one_box_of_about_forty_percent():
    h, w = 256, 192
    for seed in range(20):
        mask = cut_mix_mask(h, w, _gen(seed))
        assert mask.dtype == torch.long and mask.shape == (h, w)
        rows = mask.any(dim=1).nonzero().flatten()
        cols = mask.any(dim=0).nonzero().flatten()
        y0, y1, x0, x1 = rows.min().item(), rows.max().item() + 1, cols.min().item(), cols.max().item() + 1
        box = torch.zeros_like(mask)
        box[y0:y1, x0:x1] = 1
        assert torch.equal(mask, box)  # exactly one filled rectangle, inside the image
        # fractions in [0.4, 1] up to the rounding of a size to whole pixels (≤ 0.5 px per side)
        assert 0.4 - 0.5 / h <= (y1 - y0) / h <= 1.0
        assert 0.4 - 0.5 / w <= (x1 - x0) / w <= 1.0
        # area ≈ 0.4: (hH ± ½)(wW ± ½)/(HW) stays within 0.4 ± (H + W)/(2HW) + tiny
        assert mask.float().mean().item() == pytest.approx(0.4, abs=(h + w) / (2 * h * w) + 1e-6)


def test_cut_mask_is_reproducible_and_box_pixels_are_source():
    m1 = cut_mix_mask(64, 64, _gen(7))
    m2 = cut_mix_mask(64, 64, _gen(7))
    assert torch.equal(m1, m2)
    x_s = torch.randn(3, 64, 64)
    x_t = torch.randn(3, 64, 64)
    x_m = mix_images(m1, x_s, x_t)
    inside = m1.bool()
    assert torch.equal(x_m[:, inside], x_s[:, inside])  # M = 1 inside the box = source
    assert torch.equal(x_m[:, ~inside], x_t[:, ~inside])


# ---------------------------------------------------------------- class (ddb.md §7.2)


def _chosen_values(label: torch.Tensor, mask: torch.Tensor) -> set[int]:
    """The label values under M = 1, checking that each value is either fully in or fully out."""
    chosen = set()
    for v in torch.unique(label).tolist():
        under = mask[label == v]
        assert under.min() == under.max(), "M must be 1 iff y_s is a chosen value"
        if under[0] == 1:
            chosen.add(v)
    return chosen


@pytest.mark.parametrize(
    ("values", "k_half"), [((0, 3, 7, 255), 2), ((1, 2, 255), 2), ((4,), 1), ((0, 1, 2, 3, 4), 3)]
)
def test_class_mask_picks_ceil_half_including_255(values, k_half):
    # K unique values (255 counts as one) → ceil(K/2) chosen: K=4 → 2, K=3 → 2, K=1 → 1, K=5 → 3
    label = torch.tensor(values).repeat_interleave(5).view(1, -1).expand(4, -1).clone()
    seen_255 = False
    for seed in range(40):
        mask = class_mix_mask(label, _gen(seed))
        chosen = _chosen_values(label, mask)
        assert len(chosen) == k_half == math.ceil(len(values) / 2)
        seen_255 |= 255 in chosen
    # P(255 never drawn in 40 draws) ≤ (1/2)^40 for K ≤ 4 — it must be drawable
    assert seen_255 or 255 not in values


def test_mixed_image_is_exact_and_zero_mode_is_target():
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    mask = class_mix_mask(label, _gen(3))
    x_s = torch.randn(3, 2, 4)
    x_t = torch.randn(3, 2, 4)
    expected = mask * x_s + (1 - mask) * x_t
    assert torch.equal(mix_images(mask, x_s, x_t), expected)
    zero = zero_mix_mask(2, 4)
    assert zero.sum() == 0
    assert torch.equal(mix_images(zero, x_s, x_t), x_t)
    # batched: N×H×W masks broadcast over the channel axis
    assert torch.equal(mix_images(mask[None], x_s[None], x_t[None])[0], expected)


# ---------------------------------------------------------------- mixed label and weight (ddb.md §7.3)


def test_mixed_label_and_weight_hand_made():
    mask = torch.tensor([[1, 0], [0, 1]])
    y_s = torch.tensor([[3, 255], [4, 5]])
    y_hat = torch.tensor([[7, 8], [9, 10]])
    # y_m = y_s on M=1, ŷ on M=0
    assert torch.equal(mix_labels(mask, y_s, y_hat), torch.tensor([[3, 8], [9, 5]]))
    # weight 1 on M=1, q = 0.25 on M=0
    assert torch.equal(mixed_pixel_weight(mask, 0.25), torch.tensor([[1.0, 0.25], [0.25, 1.0]]))
    assert torch.equal(mixed_pixel_weight(mask, torch.tensor(0.25)), torch.tensor([[1.0, 0.25], [0.25, 1.0]]))


# ---------------------------------------------------------------- ATP ClassMix (atp.md §3 P.4, §7)


def test_batch_class_mix_draws_half_of_the_whole_batch_pool():
    # image 0 holds {0, 1, 2}, image 1 holds {0, 1, 2, 3, 4}: batch pool n = 5 → ⌈5/2⌉ = 3 per image
    img0 = torch.tensor([0, 1, 2]).repeat_interleave(4).view(2, 6)
    img1 = torch.tensor([0, 1, 2, 3, 4, 4]).repeat_interleave(2).view(2, 6)
    labels = torch.stack([img0, img1])
    covered0 = set()
    for seed in range(50):
        masks = batch_class_mix_masks(labels, _gen(seed))
        assert masks.shape == labels.shape and masks.dtype == torch.long
        # image 1 holds every pool class, so its mask shows the 3 drawn classes
        assert len(_chosen_values(img1, masks[1])) == 3
        # image 0 shows only the drawn classes it holds: 1..3 of its own 3 (a per-image pool would give 2)
        covered0.add(len(_chosen_values(img0, masks[0])))
    assert covered0 <= {1, 2, 3} and covered0 != {2}


def test_class_mix_composition_with_hard_weight_map():
    # atp.md §3 P.4: image mask·easy + (1−mask)·hard, label ŷ_e/ŷ_h, weight 1 pasted, pseudo_weight_hard else
    mask = torch.tensor([[[1, 1, 0], [0, 0, 0], [0, 1, 1]]])
    easy, hard = torch.full((1, 3, 3, 3), 2.0), torch.full((1, 3, 3, 3), -1.0)
    y_e, y_h = torch.full((1, 3, 3), 4), torch.full((1, 3, 3), 9)
    w_hard = torch.full((1, 3, 3), 0.5)
    w_hard[:, 0, :] = 0  # a plcrop row
    x_m = mix_images(mask, easy, hard)
    assert torch.equal(x_m[0, 0], torch.tensor([[2.0, 2.0, -1.0], [-1.0, -1.0, -1.0], [-1.0, 2.0, 2.0]]))
    assert torch.equal(mix_labels(mask, y_e, y_h)[0], torch.tensor([[4, 4, 9], [9, 9, 9], [9, 4, 4]]))
    expected_w = torch.tensor([[[1.0, 1.0, 0.0], [0.5, 0.5, 0.5], [0.5, 1.0, 1.0]]])
    assert torch.equal(mixed_pixel_weight(mask, w_hard), expected_w)
