"""Maximum squares, softmax L1 and KL to a target softmax (adaptseg/methods/parts/softmax_losses.py; umma.md §3, §7)."""

import pytest
import torch

from adaptseg.methods.parts.softmax_losses import kl_to_target, max_squares, softmax_l1


@pytest.mark.parametrize(("n", "k"), [(1, 19), (2, 12), (3, 5)])
def test_max_squares_of_uniform_logits_is_minus_n_over_k(n, k):
    # divided by H·W only: it grows with the batch (umma.md §6.9)
    assert max_squares(torch.zeros(n, k, 7, 9)).item() == pytest.approx(-n / k)


def test_max_squares_is_lowest_for_one_hot_predictions():
    sharp = torch.full((1, 3, 2, 2), -50.0)
    sharp[:, 0] = 50.0
    assert max_squares(sharp).item() == pytest.approx(-1.0) and max_squares(sharp) < max_squares(
        torch.zeros(1, 3, 2, 2)
    )


def test_softmax_l1_is_zero_for_equal_logits_and_the_mean_absolute_difference_otherwise():
    a = torch.randn(2, 4, 3, 3)
    assert softmax_l1(a, a + 5.0).item() == pytest.approx(0.0, abs=1e-7)  # softmax is shift-invariant
    b = torch.zeros(1, 2, 1, 1)
    c = torch.tensor([[[[0.0]], [[torch.log(torch.tensor(3.0))]]]])  # σ = (1/2, 1/2) vs (1/4, 3/4)
    assert softmax_l1(b, c).item() == pytest.approx(0.25)


def test_kl_is_zero_for_equal_predictions_and_matches_the_formula():
    z = torch.randn(2, 5, 4, 4)
    assert kl_to_target(z, z).item() == pytest.approx(0.0, abs=1e-6)
    p, q = torch.softmax(z, 1), torch.softmax(z.flip(1), 1)
    expected = (p * (p.log() - q.log())).sum() / 16
    assert kl_to_target(z, z.flip(1)).item() == pytest.approx(expected.item(), rel=1e-5)


def test_kl_stays_finite_when_a_target_probability_underflows():
    target = torch.tensor([[[[200.0]], [[0.0]]]])  # σ = (1, 0) in float32
    assert torch.isfinite(kl_to_target(target, torch.zeros(1, 2, 1, 1)))
