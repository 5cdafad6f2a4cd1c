"""Entropy rules (atp.md §7: entropy loss, ranking, test prior)."""

from __future__ import annotations

import math

import pytest
import torch

from adaptseg.methods.parts.entropy import (
    CITYSCAPES_CLASS_FREQUENCIES,
    apply_class_prior,
    class_prior_weights,
    easy_hard_split,
    entropy_curriculum_loss,
    entropy_rank_scores,
    normalized_entropy,
)


def test_normalized_entropy_bounds():
    one_hot = torch.nn.functional.one_hot(torch.tensor([[[2]]]), 19).permute(0, 3, 1, 2).float()
    uniform = torch.full((1, 19, 1, 1), 1 / 19)
    assert normalized_entropy(one_hot).item() == 0.0
    assert normalized_entropy(uniform).item() == pytest.approx(1.0, abs=1e-6)


def test_focal_term_vanishes_at_h_zero_and_one():
    # H = 1 (uniform): (1 − H)^5·H = 0, so L_A = −0.0001·H̃(m) with w = e^−3, m_c = e^−3/19 (divided by the
    # pixel count, not Σw): H̃ = e^−3·(3 + ln 19)/ln 19 = 0.0497871·2.018868 = 0.100514 → L_A = −1.00514e−5
    uniform = torch.zeros(2, 19, 3, 3)
    assert entropy_curriculum_loss(uniform).item() == pytest.approx(-1.00514e-5, rel=1e-4)
    # H = 0 and every pixel one-hot on one class: focal term 0 and m one-hot → diversity 0
    confident = torch.zeros(2, 19, 3, 3)
    confident[:, 4] = 100.0
    assert entropy_curriculum_loss(confident).item() == pytest.approx(0.0, abs=1e-9)


def test_focal_function_peaks_at_one_sixth():
    # f(H) = (1 − H)^5·H, f'(H) = (1 − H)^4·(1 − 6H) = 0 at H = 1/6
    def f(h: float) -> float:
        return (1 - h) ** 5 * h

    assert f(1 / 6) > f(1 / 6 - 0.01) and f(1 / 6) > f(1 / 6 + 0.01)
    assert f(1 / 6) == pytest.approx((5 / 6) ** 5 / 6)


def _focal_grad(p0: float, **detach: bool) -> float:
    z = torch.tensor([[[[math.log(p0 / (1 - p0))]], [[0.0]]]], dtype=torch.float64, requires_grad=True)
    entropy_curriculum_loss(z, diversity_scale=0.0, **detach).backward()
    return z.grad[0, 0, 0, 0].item()


@pytest.mark.parametrize(
    ("p0", "ratio"),
    [
        # p = (0.7, 0.3): H = 0.881291 > 1/6 → ratio f'(H)/(1 − H)^5 = (1 − 6H)/(1 − H) = −36.11977
        (0.7, -36.11977),
        # p = (0.99, 0.01): H = 0.080793 < 1/6 → (1 − 6H)/(1 − H) = 0.560528
        (0.99, 0.560528),
    ],
)
def test_the_methods_focal_gradient_and_the_detached_variant_differ(p0, ratio):
    # the method (default, atp.md §3/§6) differentiates f(H) = (1 − H)^5·H: below H = 1/6 descent lowers H,
    # above it the sign flips and descent raises H. The detached variant always lowers H: dL/dz0 < 0, so
    # descent raises the winning logit.
    method = _focal_grad(p0)
    assert method == _focal_grad(p0, detach_focal_weight=False)
    detached = _focal_grad(p0, detach_focal_weight=True)
    assert detached < 0
    assert method / detached == pytest.approx(ratio, rel=1e-5)


def test_entropy_rank_score_and_split():
    # uniform over C: mean over (C,H,W) of (1/C)·log₂C/log₂C = 1/C = 1/19; one-hot → 0
    logits = torch.zeros(2, 19, 4, 4)
    logits[1, 3] = 200.0
    scores = entropy_rank_scores(logits)
    assert scores.tolist() == pytest.approx([1 / 19, 0.0], abs=1e-6)
    # N = 10 → ⌊0.3·10⌋ = 3 easy: the three lowest scores, ascending; ties keep input order
    values = [0.5, 0.1, 0.9, 0.3, 0.1, 0.7, 0.2, 0.8, 0.6, 0.4]
    easy, hard = easy_hard_split(values)
    assert easy == [1, 4, 6]
    assert hard == [3, 9, 0, 8, 5, 7, 2]
    assert easy_hard_split(torch.tensor(values))[0] == [1, 4, 6]
    assert len(easy_hard_split(list(range(7)))[0]) == 2  # ⌊2.1⌋


def test_test_time_prior_matches_spec():
    assert len(CITYSCAPES_CLASS_FREQUENCIES) == 19
    w = class_prior_weights()
    # atp.md §5: road 0.693, sidewalk 0.854, building 0.736, rider 1.192, motorcycle 1.22 (unbiased std;
    # a biased std would move road to 0.685)
    expected = {0: 0.693, 1: 0.854, 2: 0.736, 12: 1.192, 17: 1.220}
    for c, value in expected.items():
        assert w[c].item() == pytest.approx(value, abs=5e-4)
    # the prior multiplies the probabilities: road 0.5 vs motorcycle 0.45 → 0.3465 vs 0.549 → motorcycle
    probs = torch.zeros(1, 19, 1, 1)
    probs[0, 0], probs[0, 17] = 0.5, 0.45
    assert apply_class_prior(probs, w).argmax(dim=1).item() == 17
