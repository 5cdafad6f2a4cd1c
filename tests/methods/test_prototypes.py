"""Prototypes (ddb.md §7.6–7.8; atp.md §7 ProtoEstimator and ProtoCL)."""

from __future__ import annotations

import math

import pytest
import torch

from adaptseg.methods.parts.prototypes import (
    CappedMeanPrototypes,
    CumulativeMeanPrototypes,
    class_mean_features,
    proto_contrastive_loss,
    prototype_distances,
    prototype_weights,
    rectified_ensemble,
)


def _logits_for(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """N×C×H×W logits whose argmax is ``classes`` (N×H×W)."""
    return torch.nn.functional.one_hot(classes, num_classes).permute(0, 3, 1, 2).float() * 5


# ---------------------------------------------------------------- DDB estimator (ddb.md §7.8)


def test_class_means_skip_classes_under_ten_pixels():
    # 4×5 image: 10 pixels class 0, 9 pixels class 1, 1 pixel class 2 → only class 0 (≥ 10) gives a vector
    classes = torch.tensor([0] * 10 + [1] * 9 + [2]).view(1, 4, 5)
    index = torch.arange(20, dtype=torch.float32).view(1, 1, 4, 5)
    features = torch.cat([index, torch.ones_like(index)], dim=1)  # D = 2: (pixel index, 1)
    vectors, ids = class_mean_features(features, _logits_for(classes, 3))
    assert ids.tolist() == [0]
    assert vectors.tolist() == [[4.5, 1.0]]  # mean of indices 0…9 = 4.5
    # two images: image-major, then class-ascending
    both = torch.stack([classes[0], torch.flip(classes[0], dims=(0, 1))])
    vectors, ids = class_mean_features(features.expand(2, -1, -1, -1), _logits_for(both, 3))
    assert ids.tolist() == [0, 0]
    assert vectors[1].tolist() == [14.5, 1.0]  # flipped: class 0 holds pixels 10…19


def test_capped_mean_update_arithmetic_and_cap():
    protos = CappedMeanPrototypes(num_classes=3, dim=2)
    # arithmetic mean while n < 3000: (2,0) then (4,2) → (3,1), n = 2
    protos.update(torch.tensor([[2.0, 0.0], [4.0, 2.0]]), torch.tensor([0, 0]))
    assert protos.prototypes[0].tolist() == [3.0, 1.0] and protos.counts[0].item() == 2
    # an all-zero vector is skipped
    protos.update(torch.zeros(1, 2), torch.tensor([0]))
    assert protos.prototypes[0].tolist() == [3.0, 1.0] and protos.counts[0].item() == 2
    # from n = 2999: η = (η·2999 + v)/3000, n → 3000; then η = (η·3000 + v)/3001 and n stays 3000
    protos.load_state_dict(
        {"prototypes": torch.tensor([[1.0, 1.0], [0, 0], [0, 0]]), "counts": torch.tensor([2999.0, 0, 0])}
    )
    protos.update(torch.tensor([[3001.0, 1.0]]), torch.tensor([0]))  # (2999 + 3001)/3000 = 2
    assert protos.prototypes[0].tolist() == [2.0, 1.0] and protos.counts[0].item() == 3000
    protos.update(torch.tensor([[3003.0, 1.0]]), torch.tensor([0]))  # (6000 + 3003)/3001 = 3: weight 1/3001
    assert protos.prototypes[0].tolist() == [3.0, 1.0] and protos.counts[0].item() == 3000
    assert protos.prototypes[1:].abs().sum() == 0  # untouched classes stay 0


def test_capped_mean_shape_and_state():
    protos = CappedMeanPrototypes(num_classes=19, dim=256)
    classes = torch.randint(0, 19, (2, 16, 16))
    protos.update_from_predictions(torch.rand(2, 256, 16, 16) + 0.1, _logits_for(classes, 19))
    state = protos.state_dict()
    assert state["prototypes"].shape == (19, 256) and state["counts"].shape == (19,)
    assert state["counts"].sum() > 0
    with pytest.raises(ValueError, match="prototypes"):
        protos.load_state_dict({"prototypes": torch.zeros(19, 128), "counts": torch.zeros(19)})


# ---------------------------------------------------------------- prototype weights (ddb.md §7.6)


def test_prototype_weights_hand_computed():
    prototypes = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    feature = torch.tensor([3.0, 0.0]).view(1, 2, 1, 1)
    assert prototype_distances(feature, prototypes).flatten().tolist() == pytest.approx([3.0, 4.0])
    # f = η_0 = (0, 0): d = (0, 5) → w = (1, e^−5)/(1 + e^−5) = (0.9933071, 0.0066929)
    w = prototype_weights(torch.zeros(1, 2, 1, 1), prototypes).flatten()
    assert w.tolist() == pytest.approx([0.9933071, 0.0066929], abs=1e-7)


def test_prototype_weights_sum_to_one_and_ignore_min_shift():
    prototypes = torch.randn(5, 8)
    features = torch.randn(2, 8, 3, 4) * 3
    w = prototype_weights(features, prototypes)
    assert torch.allclose(w.sum(dim=1), torch.ones(2, 3, 4))
    # softmax(−(d − min d)) = softmax(−d)
    assert torch.allclose(w, torch.softmax(-prototype_distances(features, prototypes), dim=1), atol=1e-6)
    # a feature on η_2 with the others ≥ 100 away → w_2 ≈ 1
    far = torch.zeros(5, 8)
    far[:, 0] = torch.tensor([100.0, 200.0, 0.0, -100.0, 300.0])
    w_far = prototype_weights(far[2].view(1, 8, 1, 1), far).flatten()
    assert w_far[2].item() > 1 - 1e-6


# ---------------------------------------------------------------- rectified ensemble (ddb.md §7.7)


def _logits(*p: float) -> torch.Tensor:
    return torch.log(torch.tensor(p, dtype=torch.float64)).view(1, -1, 1, 1)


def _w(*w: float) -> torch.Tensor:
    return torch.tensor(w, dtype=torch.float64).view(1, -1, 1, 1)


def test_rectification_flips_the_argmax():
    # p = (0.6, 0.4), w = (0.2, 0.8) → p̃ = (0.12, 0.32) → class 1 (plain argmax: 0)
    ensemble, label = rectified_ensemble([_logits(0.6, 0.4)], [_w(0.2, 0.8)])
    assert ensemble.flatten().tolist() == pytest.approx([0.12, 0.32])
    assert label.item() == 1


def test_peaked_teacher_dominates_without_renormalisation():
    # cu: p = (0.6, 0.4), w = (0.95, 0.05) → (0.57, 0.02); ca: p = (0.01, 0.99), w = (0.5, 0.5) → (0.005, 0.495)
    # P = mean = (0.2875, 0.2575) → class 0, and P sums to 0.545 (not renormalised).
    # Renormalising p̃ first would give ((0.9661 + 0.01)/2, (0.0339 + 0.99)/2) → class 1; plain mean (0.305, 0.695) → 1.
    ensemble, label = rectified_ensemble(
        [_logits(0.6, 0.4), _logits(0.01, 0.99)], [_w(0.95, 0.05), _w(0.5, 0.5)]
    )
    assert ensemble.flatten().tolist() == pytest.approx([0.2875, 0.2575])
    assert label.item() == 0


# ---------------------------------------------------------------- ATP ProtoEstimator (atp.md §7)


def test_cumulative_mean_over_two_batches():
    protos = CumulativeMeanPrototypes(num_classes=3, dim=2)
    # batch 1: class 0 ← (1,0), (3,0) (mean (2,0), n 2); class 1 ← (0,2)
    protos.update(torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0, 1]))
    # batch 2: class 0 ← (8,0): w = 1/(1 + 2) → μ_0 = (2,0)·2/3 + (8,0)·1/3 = (4,0) = mean of 1, 3, 8
    protos.update(torch.tensor([[8.0, 0.0]]), torch.tensor([0]))
    assert torch.allclose(protos.prototypes, torch.tensor([[4.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))
    assert protos.counts.tolist() == [3.0, 1.0, 0.0]  # class 1 unchanged (w = 0), class 2 unseen stays 0


# ---------------------------------------------------------------- ProtoCL (atp.md §7)


def test_proto_contrastive_divides_by_temperature():
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).t().reshape(1, 2, 1, 2).requires_grad_()
    labels = torch.tensor([[[0, 255]]])  # the second cell is ignored
    loss = proto_contrastive_loss(features, labels, prototypes)
    # one valid cell, f = (1, 0), label 0: logits f·μᵀ/100 = (0.01, 0) → CE = log(1 + e^−0.01) = ln 2 − 0.005 + 0.0000125 = 0.688160
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.01)), abs=1e-6)
    assert loss.item() == pytest.approx(0.688160, abs=1e-6)
    loss.backward()
    assert features.grad[0, :, 0, 1].abs().sum() == 0 and features.grad[0, :, 0, 0].abs().sum() > 0


def test_proto_contrastive_regulariser_sign():
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    labels = torch.tensor([[[0]]])
    plain = proto_contrastive_loss(features, labels, prototypes)
    with_reg = proto_contrastive_loss(features, labels, prototypes, use_reg=True)
    # + Σ_c log softmax(f̄·μᵀ/100)_c / (C ln C) with f̄ = (1, 0): (0.01 − 2·(ln 2 + 0.005 + 0.0000125)) / (2 ln 2) = −1.000018
    reg = (0.01 - 2 * math.log(1 + math.exp(0.01))) / (2 * math.log(2))
    assert reg == pytest.approx(-1.000018, abs=1e-6)
    assert (with_reg - plain).item() == pytest.approx(reg, abs=1e-6)  # added, and negative


def test_proto_contrastive_without_valid_cells_is_zero_with_graph():
    features = torch.randn(1, 4, 2, 2, requires_grad=True)
    loss = proto_contrastive_loss(features, torch.full((1, 2, 2), 255), torch.randn(3, 4))
    assert loss.item() == 0.0 and loss.requires_grad


def test_cumulative_mean_drops_ignored_cells():
    protos = CumulativeMeanPrototypes(num_classes=2, dim=1)
    protos.update(torch.tensor([[1.0], [5.0], [100.0]]), torch.tensor([1, 1, 255]))
    assert protos.prototypes.flatten().tolist() == [0.0, 3.0] and protos.counts.tolist() == [0.0, 2.0]
