"""OpenCV pictures: confusion-matrix heatmap and per-class IoU bars."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from adaptseg.data.labels import CLASSES, PALETTE
from adaptseg.eval import ConfusionMatrix, Report
from adaptseg.eval.plots import MODEL_COLORS, confusion_matrix_image, iou_bar_chart, write_plots


def _count(img: np.ndarray, rgb) -> int:
    return int(np.all(img == np.array(rgb, np.uint8), axis=-1).sum())


def test_confusion_matrix_image_is_a_readable_heatmap():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 19, 20000)
    pred = np.where(rng.random(20000) < 0.8, gt, rng.integers(0, 19, 20000))
    img = confusion_matrix_image(ConfusionMatrix().update(pred, gt))
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert 900 <= img.shape[1] <= 1200 and 800 <= img.shape[0] <= 1200
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # text, cells, colour bar: not a blank
    # an 80 % diagonal is dark blue, off-diagonal cells near white: both are present in quantity
    dark = (img[..., 2] > 120) & (img[..., 0] < 90)
    assert dark.sum() > 19 * 20 * 20


def test_confusion_matrix_image_accepts_plain_arrays_and_checks_names():
    img = confusion_matrix_image(np.array([[5, 1], [0, 0]]), ["a", "b"])
    assert img.shape[1] > 100
    with pytest.raises(ValueError, match="class names"):
        confusion_matrix_image(np.eye(3), ["a"])


def test_bar_lengths_follow_the_values():
    values = {c: float("nan") for c in CLASSES} | {"road": 80.0, "sky": 20.0}
    img = iou_bar_chart(values)
    road, sky = (_count(img, PALETTE[CLASSES.index(c)]) for c in ("road", "sky"))
    assert sky > 100
    assert road / sky == pytest.approx(4.0, rel=0.1)


def test_compare_draws_one_colour_per_model():
    base = {c: 50.0 for c in CLASSES}
    single = iou_bar_chart(base)
    img = iou_bar_chart(base, {"source-only": {c: 25.0 for c in CLASSES}}, name="adapted")
    assert img.shape[0] > single.shape[0]  # two bars per class
    adapted, source = _count(img, MODEL_COLORS[0]), _count(img, MODEL_COLORS[1])
    assert source > 0 and adapted / source == pytest.approx(2.0, rel=0.15)


def test_write_plots_writes_two_pngs(tmp_path):
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 19, (64, 64))
    cm = ConfusionMatrix().update(np.where(rng.random((64, 64)) < 0.7, gt, 0), gt)
    report = Report.from_confusion(cm, protocol=16, n_images=1)
    paths = write_plots(report, cm, tmp_path / "plots", compare={"other": report.per_class}, name="me")
    assert set(paths) == {"confusion_matrix", "per_class_iou"}
    for path in paths.values():
        img = cv2.imread(str(path))
        assert img is not None and img.shape[0] > 500 and img.std() > 20
