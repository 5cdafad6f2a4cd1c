"""Scoring folders of prediction PNGs against a real (tiny) Cityscapes-layout split."""

from __future__ import annotations

import numpy as np
import pytest

from adaptseg.data import build_dataset
from adaptseg.errors import UserError
from adaptseg.eval import ConfusionMatrix
from adaptseg.eval.predictions import PredictionIndex, evaluate_predictions
from adaptseg.io import write_png
from tests.eval.tiny_cityscapes import corrupt, make_cityscapes, write_predictions


@pytest.fixture
def split(tmp_path):
    items = make_cityscapes(tmp_path / "cityscapes", n_images=5)
    return items, build_dataset("cityscapes", tmp_path / "cityscapes", "val")


def test_scores_the_split_as_one_matrix(split, tmp_path):
    items, ds = split
    rng = np.random.default_rng(0)
    preds = [corrupt(item.trainids, rng) for item in items]
    write_predictions(tmp_path / "pred", items, preds)
    cm, n = evaluate_predictions(tmp_path / "pred", ds, workers=2)
    expected = ConfusionMatrix()
    for item, pred in zip(items, preds, strict=True):
        expected.update(pred, item.trainids)
    assert n == 5 and cm == expected
    assert 0 < cm.miou() < 1


def test_predictions_are_found_anywhere_under_the_folder(split, tmp_path):
    items, ds = split
    write_predictions(tmp_path / "flat", items, [i.trainids for i in items], by_city=False)
    cm, _ = evaluate_predictions(tmp_path / "flat", ds)
    assert cm.pixel_accuracy() == 1.0


def test_missing_prediction_names_it(split, tmp_path):
    items, ds = split
    write_predictions(tmp_path / "pred", items[1:], [i.trainids for i in items[1:]])
    with pytest.raises(UserError, match=rf"missing prediction {items[0].stem}\.png .*1 of 5"):
        evaluate_predictions(tmp_path / "pred", ds)


def test_duplicate_prediction_is_ambiguous(split, tmp_path):
    items, ds = split
    write_predictions(tmp_path / "pred", items, [i.trainids for i in items])
    write_png(tmp_path / "pred" / "again" / f"{items[2].stem}.png", items[2].trainids)
    with pytest.raises(UserError, match=rf"2 predictions named {items[2].stem}\.png"):
        evaluate_predictions(tmp_path / "pred", ds)
    assert PredictionIndex(tmp_path / "pred").find(items[0].image_path) is not None


def test_wrong_size_names_the_file(split, tmp_path):
    items, ds = split
    preds = [i.trainids for i in items]
    preds[3] = preds[3][:, :-2]
    write_predictions(tmp_path / "pred", items, preds)
    with pytest.raises(
        UserError, match=rf"{items[3].stem}\.png: prediction is 62x48 but the ground truth is 64x48"
    ):
        evaluate_predictions(tmp_path / "pred", ds)


def test_labelids_instead_of_trainids_is_rejected(split, tmp_path):
    items, ds = split
    write_predictions(tmp_path / "pred", items, [i.labelids for i in items])
    with pytest.raises(
        UserError, match=r"_leftImg8bit\.png: prediction holds value \d+, which is not a trainId"
    ):
        evaluate_predictions(tmp_path / "pred", ds)


def test_colour_predictions_are_rejected(split, tmp_path):
    items, ds = split
    write_predictions(tmp_path / "pred", items, [np.dstack([i.trainids] * 3) for i in items])
    with pytest.raises(UserError, match="single-channel"):
        evaluate_predictions(tmp_path / "pred", ds)


def test_missing_folder(split, tmp_path):
    with pytest.raises(UserError, match="prediction folder not found"):
        evaluate_predictions(tmp_path / "nowhere", split[1])
