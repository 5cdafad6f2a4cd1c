"""Every rule of end.md §8 with hand-computed expectations: PLF, certainty and majority fusion, the class
weights, the hard-pixel filter and the certainty encoding of the teacher store."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaptseg.errors import UserError
from adaptseg.infer.store import PseudoLabelStore, certainty_levels
from adaptseg.methods.parts.class_balance import (
    AbsentClassWeights,
    class_pixel_counts,
    class_weighted_cross_entropy,
    hard_pixel_labels,
    rare_class_weights,
    weighted_pixel_losses,
)
from adaptseg.methods.parts.label_fusion import (
    assignment_from_iou,
    assignment_from_table,
    fuse_certainty,
    fuse_majority,
    fuse_plf,
    window_sums,
)

IGNORE = 255


def teacher(label: int, certainty: dict[int, int], size: int = 7, classes: int = 3):
    labels = np.full((size, size), label, np.uint8)
    q = np.zeros((size, size, classes), np.uint8)
    for c, v in certainty.items():
        q[..., c] = v
    return labels, q


def stack(*teachers):
    return np.stack([t[0] for t in teachers]), np.stack([t[1] for t in teachers])


# ------------------------------------------------------------------------------------------------ PLF
def test_plf_conflicts_vote_in_5x5_windows_ties_to_the_lower_class_and_zero_padding_caps_the_border():
    a = teacher(2, {0: 95, 2: 95})
    b = teacher(1, {1: 95})
    labels, certs = stack(a, b)
    fused = fuse_plf(labels, certs, [0, 1, 0]).numpy()  # 0 → A, 1 → B, 2 → A: every pixel has 2 claims
    expected = np.full((7, 7), IGNORE, np.uint8)
    expected[2:5, 2:5] = 1  # tie 1 vs 2 → 1; pooled certainty 95 only where the window is inside
    assert np.array_equal(fused, expected)
    # pooled certainty of class 1 outside the centre: at most 95·20/25 = 76
    pooled = window_sums(torch.from_numpy(certs[1][..., 1])[None])[0].numpy() / 25
    assert pooled[2:5, 2:5].min() == 95 and pooled[0, 3] == 95 * 15 / 25 and pooled[1, 3] == 76


def test_plf_single_claim_keeps_the_class_and_its_assigned_certainty():
    a = teacher(0, {0: 95, 2: 95})
    b = teacher(0, {1: 95})
    fused = fuse_plf(*stack(a, b), [0, 1, 0]).numpy()
    assert (fused == 0).all()  # one claim (A for class 0), certainty 95 ≥ 90, even at the border


def test_plf_output_does_not_depend_on_the_order_of_the_assignment_table_or_of_the_teachers():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (2, 9, 9), dtype=np.uint8)
    certs = rng.integers(80, 101, (2, 9, 9, 3), dtype=np.uint8)
    one = assignment_from_table({"a": [0, 2], "b": [1]}, ["a", "b"], 3)
    two = assignment_from_table({"b": ["sidewalk"], "a": "others"}, ["b", "a"], 3)
    assert one == [0, 1, 0] and two == [1, 0, 1]
    fused = fuse_plf(labels, certs, one)
    assert torch.equal(fused, fuse_plf(labels[::-1].copy(), certs[::-1].copy(), two))


def test_plf_threshold_keeps_equality_and_drops_just_below():
    single = teacher(0, {0: 90}, size=5)
    other = teacher(0, {}, size=5)
    assert (fuse_plf(*stack(single, other), [0, 1, 1]).numpy() == 0).all()  # cert 90 = τ: kept
    single[1][..., 0] = 89
    assert (fuse_plf(*stack(single, other), [0, 1, 1]).numpy() == IGNORE).all()
    # a conflict pixel: pooled certainty 2250/25 = 90 kept, 2248/25 = 89.92 dropped
    a, b = teacher(2, {2: 90}, size=5), teacher(1, {1: 90}, size=5)
    assert fuse_plf(*stack(a, b), [0, 1, 0])[2, 2] == 1
    b[1][0, 0, 1] = 88
    assert fuse_plf(*stack(a, b), [0, 1, 0])[2, 2] == IGNORE


def test_plf_isolated_unclaimed_pixels_become_road_with_its_pooled_certainty():
    a = teacher(2, {0: 100, 2: 100}, size=5)
    b = teacher(2, {1: 100}, size=5)
    a[0][2, 2] = 1  # nobody claims the centre: A says 1 (assigned to B), B says 2 (assigned to A)
    b[0][2, 2] = 2
    labels, certs = stack(a, b)
    fused = fuse_plf(labels, certs, [0, 1, 0])
    # the window around the centre holds 24 claims of class 2 → the centre votes 2 (its own class has 0)
    assert fused[2, 2] == 2
    a[0][:] = 1  # now nothing is claimed anywhere: every window is empty → class 0 with K_0 pooled
    fused = fuse_plf(*stack(a, b), [0, 1, 0]).numpy()
    assert fused[2, 2] == 0 and (fused[0] == IGNORE).all()  # 100·15/25 = 60 < 90 at the border


# ------------------------------------------------------------------------------------- certainty, majority
def test_certainty_fusion_keeps_a_mean_of_90_and_drops_89_5():
    q = np.zeros((2, 1, 2, 2), np.uint8)
    q[:, 0, 0, 1] = [95, 85]  # pixel 0: class 1, mean 90
    q[:, 0, 1, 1] = [95, 84]  # pixel 1: class 1, mean 89.5
    assert fuse_certainty(q).tolist() == [[1, IGNORE]]


def test_majority_ties_go_to_the_lower_id_and_no_votes_give_0():
    labels = np.array([[[3, IGNORE]], [[3, IGNORE]], [[1, IGNORE]], [[1, IGNORE]]], np.uint8)
    assert fuse_majority(labels, 19).tolist() == [[1, 0]]


def test_assignment_tables_are_checked_and_iou_picks_the_best_teacher_per_class():
    with pytest.raises(UserError, match="both"):
        assignment_from_table({"a": [0], "b": ["road"]}, ["a", "b"], 3)
    with pytest.raises(UserError, match="without a teacher"):
        assignment_from_table({"a": [0]}, ["a", "b"], 3)
    with pytest.raises(UserError, match="not a teacher"):
        assignment_from_table({"c": "others"}, ["a", "b"], 3)
    with pytest.raises(UserError, match="did you mean 'traffic_light'"):
        assignment_from_table({"a": ["trafic light"], "b": "others"}, ["a", "b"], 19)
    ious = np.array([[0.5, np.nan, 0.2], [0.4, 0.1, 0.2]])
    assert assignment_from_iou(ious) == [0, 1, 0]  # NaN never wins, ties → first teacher


# --------------------------------------------------------------------------------------------- class weights
def test_rare_class_weight_is_7_below_64x64_pixels_per_image():
    labels = torch.full((1, 256, 512), 2, dtype=torch.long)
    labels.view(-1)[:4095] = 0
    labels.view(-1)[4095 : 4095 + 4096] = 1
    counts = class_pixel_counts(labels, 3)
    assert counts.tolist() == [4095, 4096, 256 * 512 - 8191]
    assert rare_class_weights(counts, batch_size=1).tolist() == [7.0, 1.0, 1.0]


def test_often_balance_ema_of_an_absent_class():
    ema = AbsentClassWeights(2)
    seen = []
    for _ in range(3):
        seen.append(ema.update(torch.tensor([0.0, 5.0]))[0].item())
    assert seen == pytest.approx([1.6, 2.14, 2.626])  # 7 − 6·0.9^k
    assert ema.weights[1].item() == pytest.approx(1.0)


def test_hard_filter_keeps_only_pixels_at_or_above_the_80th_percentile():
    losses = torch.tensor([0.0, 0, 1, 2, 3, 4, 5, 6, 7, 8]).view(1, 1, 10)
    labels = torch.tensor([255, 255, 0, 0, 0, 0, 0, 0, 1, 1]).view(1, 1, 10)
    assert torch.quantile(losses.flatten(), 0.8).item() == pytest.approx(6.2)
    assert hard_pixel_labels(losses, labels).flatten().tolist() == [255] * 8 + [1, 1]
    # ≥ 80 % zeros: τ_h = 0, nothing is dropped
    zeros = torch.zeros(1, 1, 10)
    assert torch.equal(hard_pixel_labels(zeros, labels), labels)


def test_weighted_ce_divides_by_the_sum_of_the_labels_weights():
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.tensor([[[0, 1], [2, 255]]])
    w = torch.tensor([7.0, 1.0, 2.0])
    nll = -F.log_softmax(logits, 1)
    by_hand = (7 * nll[0, 0, 0, 0] + 1 * nll[0, 1, 0, 1] + 2 * nll[0, 2, 1, 0]) / 10
    assert class_weighted_cross_entropy(logits, labels, w).item() == pytest.approx(by_hand.item(), rel=1e-6)
    per_pixel = weighted_pixel_losses(logits, labels, w)
    assert per_pixel[0, 1, 1].item() == 0.0 and per_pixel[0, 0, 0].item() == pytest.approx(
        7 * nll[0, 0, 0, 0].item()
    )
    assert class_weighted_cross_entropy(logits, torch.full_like(labels, 255), w).item() == 0.0


# ------------------------------------------------------------------------------------------- certainties
def test_certainty_is_floor_of_100p_stored_as_uint8_hxwxc(tmp_path):
    probs = torch.tensor([0.999, 0.0005, 0.0005]).view(3, 1, 1).expand(3, 2, 4).contiguous()
    levels = certainty_levels(probs)
    assert levels.dtype == np.uint8 and levels.shape == (2, 4, 3) and levels[0, 0].tolist() == [99, 0, 0]
    store = PseudoLabelStore(tmp_path / "store", certainty=True)
    store.write("a/b", probs)
    stored = store.read_certainty("a/b")
    assert stored.dtype == np.uint8 and stored.shape == (2, 4, 3) and (stored[..., 0] == 99).all()
    assert store.is_complete("a/b") and store.read("a/b").label.max() == 0
    with pytest.raises(UserError, match="certainty=True, not False"):
        PseudoLabelStore(tmp_path / "store", certainty=False)
    (tmp_path / "store" / "cert" / "a" / "b.npz").write_bytes(b"PK")  # a torn write: not complete
    assert not store.is_complete("a/b")
