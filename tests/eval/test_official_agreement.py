"""Our metrics equal cityscapesScripts' pixel-level evaluator on the same files (issue #2, item 10).

A small Cityscapes-layout val split (``gtFine/val/<city>/*_gtFine_labelIds.png`` with ignored labelIds
such as 1 ego vehicle, 4 static, 6 ground, 9 parking) — a MiniCity one, and one of random blocks of
labelIds — is scored twice from the same imperfect predictions:

* by us, from trainId PNGs (``adaptseg.eval.predictions.evaluate_predictions`` with the real Cityscapes
  reader, which maps labelIds to trainIds);
* by ``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``, in-process, from the same
  predictions converted to labelIds (``trainids_to_labelids``: trainId 255 → labelId 0 "unlabeled").

Conventions being matched: one confusion matrix over the whole split (not per-image means); pixels
whose ground truth is ignored count for nothing; a prediction that is no class (255 → labelId 0) on a
valid pixel is a false negative of the true class and nobody's false positive; IoU = TP/(TP+FP+FN);
a class absent from ground truth and prediction has no IoU (NaN) and is left out of the mean, while a
class that is only predicted (bus here) has IoU 0 and counts; the mean is over the remaining classes.

The evaluator reads ``CITYSCAPES_DATASET``/``CITYSCAPES_RESULTS``/``CITYSCAPES_EXPORT_DIR`` at import,
so it is imported afresh after setting them; it calls ``sys.exit`` on errors (caught here). Instance-
level scores and pixel accuracy are switched off: they use ``np.in1d``, which NumPy ≥ 2.4 removed
(shared/environment.md), and are not what we compare.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from adaptseg.data import build_dataset
from adaptseg.data.labels import CLASSES, trainids_to_labelids
from adaptseg.eval import Report
from adaptseg.eval.predictions import evaluate_predictions
from adaptseg.io import write_png
from tests.eval.tiny_cityscapes import (
    BUS,
    TRAIN,
    Item,
    corrupt,
    make_cityscapes,
    read_items,
    relabel,
    write_predictions,
)

EVALUATOR = "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"
BUS_LABELID, TRAIN_LABELID, CAR_LABELID = 28, 31, 26


def official_scores(root: Path, results: Path, export: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Run cityscapesScripts' pixel-level evaluation of ``results`` against ``root/gtFine/val``."""
    pytest.importorskip("cityscapesscripts")
    monkeypatch.setenv("CITYSCAPES_DATASET", str(root))
    monkeypatch.setenv("CITYSCAPES_RESULTS", str(results))
    monkeypatch.setenv("CITYSCAPES_EXPORT_DIR", str(export))
    monkeypatch.delitem(sys.modules, EVALUATOR, raising=False)  # re-read the environment at import
    evaluator = importlib.import_module(EVALUATOR)
    args = evaluator.args
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.predictionPath = args.predictionWalk = None
    ground_truth = sorted(str(p) for p in (root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            predictions = [evaluator.getPrediction(args, gt) for gt in ground_truth]
            return evaluator.evaluateImgLists(predictions, ground_truth, args)
        except SystemExit:
            pytest.fail(f"cityscapesScripts stopped: {out.getvalue().strip()}")


def minicity_val(root: Path, n_images: int) -> list[Item]:
    """A MiniCity Cityscapes-like val split whose ground truth has no bus (→ car) and no train (→ unlabeled),
    so that one class can be predicted-only and another absent."""
    from adaptseg.data.minicity import generate

    generate(root.parent, images=n_images, size=(64, 128), domains=["cityscapes"], progress=False)
    return relabel(root, read_items(root), {BUS_LABELID: CAR_LABELID, TRAIN_LABELID: 0})


@pytest.mark.parametrize("source", ["minicity", "random-blocks"])
def test_per_class_iou_and_miou_equal_cityscapesscripts(tmp_path, monkeypatch, source):
    root = tmp_path / "data" / "cityscapes"
    if source == "minicity":
        items = minicity_val(root, n_images=6)
    else:
        items = make_cityscapes(root, n_images=6, size=(64, 128), seed=1)
    rng = np.random.default_rng(100)
    preds = [corrupt(item.trainids, rng) for item in items]
    write_predictions(tmp_path / "pred_trainids", items, preds)
    for item, pred in zip(items, preds, strict=True):
        write_png(tmp_path / "pred_labelids" / item.city / f"{item.stem}.png", trainids_to_labelids(pred))
    export = tmp_path / "export"
    export.mkdir()

    cm, n_images = evaluate_predictions(tmp_path / "pred_trainids", build_dataset("cityscapes", root, "val"))
    ours = Report.from_confusion(cm, protocol=19, n_images=n_images)
    theirs = official_scores(root, tmp_path / "pred_labelids", export, monkeypatch)

    assert n_images == 6
    for name in CLASSES:
        mine, ref = ours.per_class[name] / 100, theirs["classScores"][name]
        if math.isnan(ref):
            assert math.isnan(mine), name
        else:
            assert mine == pytest.approx(ref, abs=1e-6), name
    assert ours.miou / 100 == pytest.approx(theirs["averageScoreClasses"], abs=1e-6)
    # the data exercise the rules above: an imperfect score, a predicted-only class, an absent class
    assert 0.3 < theirs["averageScoreClasses"] < 0.95
    assert theirs["classScores"][CLASSES[BUS]] == 0.0
    assert math.isnan(theirs["classScores"][CLASSES[TRAIN]])
