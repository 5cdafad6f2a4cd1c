"""Cross-entropy with explicit normalisation (adaptseg.methods.parts.losses; ddb.md §7.4)."""

import math

import pytest
import torch
import torch.nn.functional as F

from adaptseg.methods.parts.losses import cross_entropy


def _uniform(n=2, c=4, h=6, w=8):
    return torch.zeros(n, c, h, w), torch.zeros(n, h, w, dtype=torch.long)


def test_equal_per_pixel_losses_and_half_ignored():
    logits, target = _uniform()
    full = cross_entropy(logits, target, normalize="all_pixels")
    assert full.item() == pytest.approx(math.log(4))
    target[:, :3] = 255  # ignore half of the pixels
    assert cross_entropy(logits, target, normalize="all_pixels").item() == pytest.approx(math.log(4) / 2)
    assert cross_entropy(logits, target, normalize="valid_pixels").item() == pytest.approx(math.log(4))


def test_valid_pixels_matches_torch_and_all_pixels_keeps_ignored_in_denominator():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, 9)
    target = torch.randint(0, 5, (2, 7, 9))
    target[0, :2] = 255
    ref = F.cross_entropy(logits, target, ignore_index=255)
    assert cross_entropy(logits, target, normalize="valid_pixels").item() == pytest.approx(
        ref.item(), rel=1e-6
    )
    valid = (target != 255).sum().item()
    expected = ref.item() * valid / target.numel()
    assert cross_entropy(logits, target, normalize="all_pixels").item() == pytest.approx(expected, rel=1e-6)


def test_logits_are_upsampled_to_the_label_and_pixel_weights_scale():
    logits = torch.zeros(1, 3, 4, 4)
    logits[:, 1] = 2.0
    target = torch.ones(1, 16, 16, dtype=torch.long)
    per_pixel = -torch.log_softmax(torch.tensor([0.0, 2.0, 0.0]), 0)[1].item()
    assert cross_entropy(logits, target, normalize="all_pixels").item() == pytest.approx(per_pixel, rel=1e-6)
    assert cross_entropy(logits, target, normalize="all_pixels", pixel_weight=0.25).item() == pytest.approx(
        per_pixel / 4, rel=1e-6
    )
    weight = torch.zeros(1, 16, 16)
    weight[:, :8] = 1.0
    assert cross_entropy(logits, target, normalize="all_pixels", pixel_weight=weight).item() == pytest.approx(
        per_pixel / 2, rel=1e-6
    )


def test_normalisation_must_be_named():
    logits, target = _uniform()
    with pytest.raises(ValueError):
        cross_entropy(logits, target, normalize="mean")
