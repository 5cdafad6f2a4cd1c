"""ATP negative-label loss (atp.md §7 "Negative loss")."""

from __future__ import annotations

import math

import pytest
import torch

from adaptseg.methods.parts.complementary import negative_label_loss


def _logits(*p: float) -> torch.Tensor:
    return torch.log(torch.tensor(p, dtype=torch.float64)).view(1, -1, 1, 1).clone().requires_grad_()


def test_zero_when_no_class_is_below_threshold():
    # (0.5, 0.3, 0.2): every p ≥ 0.04 → N = ∅ → −log 1 = 0
    assert negative_label_loss(_logits(0.5, 0.3, 0.2)).item() == pytest.approx(0.0, abs=1e-12)


def test_hand_value_and_gradient():
    z = _logits(0.9, 0.07, 0.03)
    loss = negative_label_loss(z)
    # N = {c : p_c < 0.04} = {2}: −log(1 − 0.03) = −log 0.97 = 0.0304592
    assert loss.item() == pytest.approx(-math.log(0.97), abs=1e-12)
    loss.backward()
    # the mask is a constant, p is not: dL/dz_j = (p_j·[j∈N] − S·p_j)/(1 − S) with S = 0.03
    # → (−0.027, −0.0021, 0.0291)/0.97 = (−0.0278351, −0.0021649, 0.03)
    assert z.grad.flatten().tolist() == pytest.approx([-0.0278351, -0.0021649, 0.03], abs=1e-7)


def test_every_pixel_counts_and_threshold_is_a_parameter():
    # two pixels (no label input, so 255 pixels count like any other): mean of −log 0.97 and 0
    z = torch.cat([_logits(0.9, 0.07, 0.03), _logits(0.5, 0.3, 0.2)], dim=2)
    assert negative_label_loss(z).item() == pytest.approx(-math.log(0.97) / 2, abs=1e-12)
    # threshold 0.08: N = {1, 2} → −log 0.9
    assert negative_label_loss(_logits(0.9, 0.07, 0.03), threshold=0.08).item() == pytest.approx(
        -math.log(0.9)
    )


def test_clamped_when_all_mass_is_negative():
    # every class below the threshold (possible with threshold > 1/C): 1 − Σp = 0 → clamp to 1e−8
    z = _logits(0.5, 0.5)
    assert negative_label_loss(z, threshold=0.6).item() == pytest.approx(-math.log(1e-8), rel=1e-6)


def test_low_precision_logits_are_computed_in_float32():
    z = _logits(0.9, 0.07, 0.03).detach().to(torch.bfloat16)
    assert negative_label_loss(z).dtype == torch.float32
