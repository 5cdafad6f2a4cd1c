"""`adaptseg eval --pred`: table, JSON, plots and one-line errors on a tiny Cityscapes split."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from adaptseg.cli.app import app
from adaptseg.data.labels import CLASSES, PROTOCOLS
from adaptseg.eval import ConfusionMatrix
from tests.eval.tiny_cityscapes import BUS, TRAIN, corrupt, make_cityscapes, write_predictions

runner = CliRunner()


@pytest.fixture
def setup(tmp_path):
    items = make_cityscapes(tmp_path / "cs", n_images=4)
    rng = np.random.default_rng(3)
    preds = [corrupt(item.trainids, rng) for item in items]
    write_predictions(tmp_path / "pred", items, preds)
    expected = ConfusionMatrix()
    for item, pred in zip(items, preds, strict=True):
        expected.update(pred, item.trainids)
    return tmp_path, items, expected


def _eval(tmp_path, *extra: str):
    args = [
        "eval",
        "--pred",
        str(tmp_path / "pred"),
        "--dataset",
        "cityscapes",
        "--root",
        str(tmp_path / "cs"),
    ]
    return runner.invoke(app, [*args, "--split", "val", *extra])


def test_prints_table_and_writes_json(setup):
    tmp_path, _, expected = setup
    result = _eval(tmp_path, "--json", str(tmp_path / "out" / "metrics.json"))
    assert result.exit_code == 0, result.output
    assert "Per-class IoU" in result.output and "traffic light" in result.output
    assert f"mIoU19 {100 * expected.miou():.2f}" in result.output
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["protocol"] == 19 and data["n_images"] == 4
    assert data["mIoU"] == pytest.approx(100 * expected.miou())
    assert data["aAcc"] == pytest.approx(100 * expected.pixel_accuracy())
    assert list(data["per_class"]) == list(CLASSES)
    for name, iou in zip(CLASSES, expected.iou(), strict=True):
        assert data["per_class"][name] == (None if np.isnan(iou) else pytest.approx(100 * iou))
    assert data["per_class"][CLASSES[BUS]] == 0.0 and data["per_class"][CLASSES[TRAIN]] is None


def test_protocol_16(setup):
    tmp_path, _, expected = setup
    result = _eval(tmp_path, "--protocol", "16", "--json", str(tmp_path / "m.json"))
    assert result.exit_code == 0, result.output
    assert "terrain *" in result.output and "mIoU16" in result.output
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["protocol"] == 16
    assert data["mIoU"] == pytest.approx(100 * expected.miou(PROTOCOLS[16]))
    assert data["mIoU13"] == pytest.approx(100 * expected.miou(PROTOCOLS[13]))


def test_plots_writes_two_pictures(setup):
    tmp_path, _, _ = setup
    _eval(tmp_path, "--json", str(tmp_path / "first.json"))
    result = _eval(
        tmp_path, "--plots", str(tmp_path / "plots"), "--compare", f"source-only={tmp_path / 'first.json'}"
    )
    assert result.exit_code == 0, result.output
    for name in ("confusion_matrix.png", "per_class_iou.png"):
        img = cv2.imread(str(tmp_path / "plots" / name))
        assert img is not None and img.shape[0] > 500 and len(np.unique(img.reshape(-1, 3), axis=0)) > 20


def test_missing_prediction_exits_2_naming_it(setup):
    tmp_path, items, _ = setup
    (tmp_path / "pred" / items[1].city / f"{items[1].stem}.png").unlink()
    result = _eval(tmp_path)
    assert result.exit_code == 2
    assert f"error: {tmp_path / 'pred'}: missing prediction {items[1].stem}.png" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--protocol", "17"], "--protocol 17 is not one of [19, 16, 13]"),
        (["--model", "m"], "exactly one of --pred DIR and --model M"),
        (["--preset", "p.yaml"], "--preset only applies to --model"),
        (["--compare", "nope.json", "--plots", "p"], "report not found"),
        (["--compare", "r.json"], "--compare only applies to the --plots bar chart"),
    ],
)
def test_bad_options_exit_2(setup, extra, message):
    result = _eval(setup[0], *extra)
    assert result.exit_code == 2 and message in result.output, result.output


def test_neither_pred_nor_model(setup):
    tmp_path = setup[0]
    result = runner.invoke(app, ["eval", "--dataset", "cityscapes", "--root", str(tmp_path / "cs")])
    assert result.exit_code == 2 and "exactly one of --pred DIR and --model M" in result.output


def test_model_mode_reports_what_the_engine_counted(setup, monkeypatch):
    """The CLI half of the --model contract: evaluate_model(model=, dataset=, preset=) → (cm, n)."""
    tmp_path, items, expected = setup
    calls = []

    def evaluate_model(model, dataset, preset):
        calls.append((model, len(dataset), preset))
        return expected, len(dataset)

    engine = types.ModuleType("adaptseg.infer.evaluate")
    engine.evaluate_model = evaluate_model
    monkeypatch.setitem(sys.modules, "adaptseg.infer.evaluate", engine)
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    args = ["eval", "--model", str(run), "--preset", "p.yaml", "--dataset", "cityscapes", "--root"]
    out = tmp_path / "model.json"
    result = runner.invoke(
        app, [*args, str(tmp_path / "cs"), "--json", str(out), "--plots", str(tmp_path / "mp")]
    )
    assert result.exit_code == 0, result.output
    assert calls == [(str(run), len(items), Path("p.yaml"))]
    assert json.loads(out.read_text())["mIoU"] == pytest.approx(100 * expected.miou())
    assert (tmp_path / "mp" / "per_class_iou.png").is_file()
