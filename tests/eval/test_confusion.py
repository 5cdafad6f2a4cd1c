"""ConfusionMatrix: hand-computed counts, IoUs and means on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from adaptseg.data.labels import PROTOCOLS
from adaptseg.eval import ConfusionMatrix


def test_counts_iou_and_accuracy_by_hand():
    target = np.array([[0, 0, 1], [1, 2, 255]], np.uint8)
    pred = np.array([[0, 1, 1], [1, 1, 0]], np.uint8)  # the ignored pixel's prediction must not count
    cm = ConfusionMatrix(3).update(pred, target)
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 2, 0], [0, 1, 0]])
    assert cm.matrix.dtype == np.int64
    assert cm.total == 5
    # road: TP 1, FN 1, FP 0 → 1/2; class 1: TP 2, FP 2 → 2/4; class 2: TP 0, FN 1 → 0
    np.testing.assert_allclose(cm.iou(), [1 / 2, 2 / 4, 0.0])
    assert cm.miou() == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    np.testing.assert_allclose(cm.per_class_accuracy(), [1 / 2, 2 / 2, 0 / 1])


def test_absent_class_has_no_iou_and_predicted_only_class_scores_zero():
    target = np.array([0, 0, 1, 1, 1, 255], np.uint8)
    pred = np.array([0, 2, 1, 1, 0, 3], np.uint8)  # class 2 only predicted; class 3 only on an ignored pixel
    cm = ConfusionMatrix(4).update(pred, target)
    iou = cm.iou()
    assert iou[0] == pytest.approx(1 / 3)  # TP 1, FN 1 (→2), FP 1 (1→0)
    assert iou[1] == pytest.approx(2 / 3)
    assert iou[2] == 0.0  # predicted, never true: a real zero that pulls the mean down
    assert math.isnan(iou[3])  # absent from GT and (counted) prediction: left out of the mean
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert math.isnan(cm.per_class_accuracy()[2])  # no GT pixels of class 2


def test_prediction_outside_the_classes_is_a_miss_for_the_ground_truth_class():
    target = np.array([0, 0, 0, 1], np.uint8)
    pred = np.array([0, 255, 7, 1], np.uint8)
    cm = ConfusionMatrix(3).update(pred, target)
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(cm.unassigned, [2, 0, 0])
    assert cm.iou()[0] == pytest.approx(1 / 3)  # two false negatives, no class gains a false positive
    assert cm.iou()[1] == 1.0
    assert cm.pixel_accuracy() == pytest.approx(2 / 4)
    assert cm.per_class_accuracy()[0] == pytest.approx(1 / 3)


def test_dataset_level_accumulation_is_not_the_mean_of_per_image_ious():
    images = [
        (np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1])),  # pred, gt: IoU0 3/4, IoU1 0 → 0.375
        (np.array([1, 1, 1, 1]), np.array([1, 1, 1, 1])),  # IoU1 1, class 0 absent → 1.0
    ]
    total = ConfusionMatrix(2)
    per_image = []
    for pred, gt in images:
        total.update(pred, gt)
        per_image.append(ConfusionMatrix(2).update(pred, gt).miou())
    assert np.mean(per_image) == pytest.approx(0.6875)
    np.testing.assert_array_equal(total.matrix, [[3, 0], [1, 4]])
    assert total.miou() == pytest.approx((3 / 4 + 4 / 5) / 2)  # 0.775 over the whole split


def _one_class_each(recall: list[float], pixels: int = 20) -> ConfusionMatrix:
    """19 classes, each with ``pixels`` GT pixels of which a fraction is predicted right and the rest 255,
    so that IoU_c = recall_c exactly."""
    gt, pred = [], []
    for c, r in enumerate(recall):
        hits = round(r * pixels)
        gt += [c] * pixels
        pred += [c] * hits + [255] * (pixels - hits)
    return ConfusionMatrix(19).update(np.array(pred), np.array(gt))


def test_protocol_means_come_from_per_class_ious_not_from_scaling():
    recall = [0.05 * (c % 10 + 1) for c in range(19)]  # terrain 0.5, truck 0.25, train 0.35
    cm = _one_class_each(recall)
    np.testing.assert_allclose(cm.iou(), recall)
    for k in (16, 13):
        expected = np.mean([recall[c] for c in PROTOCOLS[k]])
        assert cm.miou(PROTOCOLS[k]) == pytest.approx(expected)
        assert cm.miou(PROTOCOLS[k]) != pytest.approx(
            cm.miou() * 19 / k
        )  # DAFormer's rescaling is wrong here
    d = cm.to_dict(protocol=16)
    assert d["protocol"] == 16
    assert d["mIoU"] == pytest.approx(100 * np.mean([recall[c] for c in PROTOCOLS[16]]))
    assert d["mIoU13"] == pytest.approx(100 * np.mean([recall[c] for c in PROTOCOLS[13]]))
    assert "mIoU16" not in d and len(d["per_class"]) == 19
    assert d["per_class"]["terrain"] == pytest.approx(50.0)
    assert "terrain" not in d["protocol_classes"] and len(d["protocol_classes"]) == 16


def test_mean_over_a_protocol_skips_absent_classes_like_cityscapesscripts():
    recall = [0.5] * 19
    cm = _one_class_each(recall)
    cm2 = ConfusionMatrix(19)
    keep = [c for c in range(19) if c != 0]  # drop road from GT and prediction entirely
    cm2._counts[keep] = cm.counts[keep]
    assert math.isnan(cm2.iou()[0])
    assert cm2.miou(PROTOCOLS[13]) == pytest.approx(0.5)  # nanmean, not (12 × 0.5 + 0) / 13
    assert cm2.to_dict()["per_class"]["road"] is None


def test_empty_matrix_gives_nan_without_warnings():
    cm = ConfusionMatrix(3)
    with np.errstate(all="raise"):
        assert math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())
    assert cm.to_dict(protocol=None)["mIoU"] is None


def test_merge_and_iadd_equal_counting_everything_at_once():
    rng = np.random.default_rng(1)
    preds = [rng.integers(0, 5, (7, 9)) for _ in range(4)]
    gts = [np.where(rng.random((7, 9)) < 0.1, 255, rng.integers(0, 5, (7, 9))) for _ in range(4)]
    whole = ConfusionMatrix(5).update(np.stack(preds), np.stack(gts))
    ranks = [ConfusionMatrix(5), ConfusionMatrix(5)]
    for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
        ranks[i % 2].update(p, g)
    merged = ranks[0] + ranks[1]
    assert merged == whole and merged is not ranks[0]
    ranks[0] += ranks[1]
    assert ranks[0] == whole
    assert ConfusionMatrix.from_counts(whole.counts.copy()) == whole
    np.testing.assert_array_equal(ConfusionMatrix.from_counts(whole.matrix).matrix, whole.matrix)


def test_torch_tensors_count_like_numpy():
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 19, (2, 16, 16))
    gt = np.where(rng.random((2, 16, 16)) < 0.2, 255, rng.integers(0, 19, (2, 16, 16))).astype(np.uint8)
    a = ConfusionMatrix().update(pred, gt)
    b = ConfusionMatrix().update(torch.from_numpy(pred), torch.from_numpy(gt))
    assert a == b and a.total == int((gt != 255).sum())


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8), "shape"),
        (np.zeros(3, np.float32), np.zeros(3, np.uint8), "integer"),
        (np.zeros(3, np.uint8), np.array([0, 3, 1], np.uint8), "ground truth contains 3"),
    ],
)
def test_bad_input_is_a_clear_error(pred, target, match):
    with pytest.raises(ValueError, match=match):
        ConfusionMatrix(3).update(pred, target)


def test_merging_different_class_counts_is_an_error():
    with pytest.raises(ValueError, match="cannot merge"):
        ConfusionMatrix(19).merge(ConfusionMatrix(16))


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.uint8, st.integers(1, 30), elements=st.sampled_from([0, 1, 2, 3, 200, 255])),
    st.randoms(use_true_random=False),
)
def test_counts_match_a_pixel_by_pixel_count(pred, rnd):
    target = np.array([rnd.choice([0, 1, 2, 3, 255]) for _ in range(pred.size)], np.uint8)
    cm = ConfusionMatrix(4).update(pred, target)
    expected = np.zeros((4, 5), np.int64)
    for p, g in zip(pred.tolist(), target.tolist(), strict=True):
        if g != 255:
            expected[g, p if p < 4 else 4] += 1
    np.testing.assert_array_equal(cm.counts, expected)
    tp = np.diag(expected[:, :4])
    fn = expected.sum(axis=1) - tp  # includes predictions outside the classes
    fp = expected[:, :4].sum(axis=0) - tp
    for c in range(4):
        denom = tp[c] + fp[c] + fn[c]
        got = cm.iou()[c]
        if denom == 0:
            assert math.isnan(got)
        else:
            assert got == pytest.approx(tp[c] / denom)


def test_all_reduce_is_a_no_op_outside_distributed_runs():
    cm = ConfusionMatrix(3).update(np.array([0, 1]), np.array([0, 0]))
    before = cm.counts.copy()
    assert cm.all_reduce() is cm
    np.testing.assert_array_equal(cm.counts, before)


def _reduce_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        gt = np.array([0, 1, 2, 2])
        cm = ConfusionMatrix(3).update(np.full(4, rank), gt)  # rank r predicts class r everywhere
        np.save(f"{out_dir}/rank{rank}.npy", cm.all_reduce().counts)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_sums_the_ranks(tmp_path):
    world = 2
    torch.multiprocessing.spawn(
        _reduce_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True
    )
    gt = np.array([0, 1, 2, 2])
    expected = ConfusionMatrix(3)
    for rank in range(world):
        expected.update(np.full(4, rank), gt)
    for rank in range(world):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{rank}.npy"), expected.counts)
