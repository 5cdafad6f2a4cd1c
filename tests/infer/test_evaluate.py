"""`evaluate_model` and `adaptseg eval --model` on a tiny MiniCity split, scored at full GT resolution."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from adaptseg.cli.app import app
from adaptseg.data import build_dataset
from adaptseg.data.labels import IGNORE_INDEX
from adaptseg.eval.confusion import ConfusionMatrix
from adaptseg.infer.backends import load_backend
from adaptseg.infer.config import InferenceConfig
from adaptseg.infer.engine import SlidingWindow
from adaptseg.infer.evaluate import evaluate_model


def test_evaluate_model_equals_a_per_image_loop(minicity, weights):
    ds = build_dataset("cityscapes", minicity, "val")
    cm, n = evaluate_model(model=weights, dataset=ds, preset=None)
    assert n == len(ds) == 4
    engine = SlidingWindow(load_backend(weights, "cpu"), InferenceConfig())
    expected = ConfusionMatrix(19)
    for i in range(len(ds)):
        sample = ds[i]
        expected.update(engine.predict_image(sample.image).argmax(0), sample.label)
    assert cm == expected
    assert cm.total == sum(int((ds.read_label(i) != IGNORE_INDEX).sum()) for i in range(len(ds)))


def test_evaluation_at_native_size_never_makes_probabilities(minicity, weights, monkeypatch):
    """Labels come from the summed logits: no per-image softmax (nor count division) in `eval`."""
    import adaptseg.infer.engine as engine_module

    calls = []
    real = engine_module.softmax_
    monkeypatch.setattr(engine_module, "softmax_", lambda x, dim: calls.append(x.shape) or real(x, dim))
    ds = build_dataset("cityscapes", minicity, "val")
    preset = InferenceConfig(mode="slide", crop=(48, 64), stride=(32, 48), batch_size=4)
    cm, _ = evaluate_model(model=weights, dataset=ds, preset=preset)
    assert calls == []
    engine = SlidingWindow(load_backend(weights, "cpu"), preset)
    expected = ConfusionMatrix(19)
    for i in range(len(ds)):
        expected.update(engine.predict_image(ds[i].image).argmax(0), ds[i].label)
    assert len(calls) == len(ds)  # predict_image returns probabilities: one softmax per image
    assert cm == expected


def test_lower_resolution_inference_is_scored_at_full_resolution(minicity, weights):
    ds = build_dataset("cityscapes", minicity, "val")
    preset = InferenceConfig(resize=(64, 32), tta={"flip": True})
    cm, _ = evaluate_model(model=weights, dataset=ds, preset=preset)
    assert cm.total == sum(int((ds.read_label(i) != IGNORE_INDEX).sum()) for i in range(len(ds)))


def test_eval_cli_with_a_model(minicity, weights, tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            weights,
            "--dataset",
            "cityscapes",
            "--root",
            str(minicity),
            "--split",
            "val",
            "--preset",
            "minicity",
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n_images"] == 4 and 0 <= report["mIoU"] <= 100 and len(report["per_class"]) == 19
    ds = build_dataset("cityscapes", minicity, "val")
    assert report["pixels"] == sum(int((ds.read_label(i) != IGNORE_INDEX).sum()) for i in range(len(ds)))
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "confusion_matrix.png",
        "per_class_iou.png",
    ]
