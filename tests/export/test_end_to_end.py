"""Exported models serve `adaptseg eval` exactly like the eager model they came from.

Default suite: the seeded random-init tiny DeepLab-v2 (the shared artifacts), scored on a small MiniCity
Cityscapes-like val split. `slow`: a tiny DeepLab-v2 trained by the trainer for a few dozen iterations on
MiniCity, exported from its run folder with the CLI."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from adaptseg.cli.app import app
from adaptseg.data.minicity import generate

runner = CliRunner()


@pytest.fixture(scope="module")
def minicity(tmp_path_factory):
    """MiniCity's Cityscapes-like domain: 4 train and 4 val images at 128×256."""
    out = tmp_path_factory.mktemp("minicity")
    return generate(out, images=4, domains=["cityscapes"], progress=False, seed=3)["cityscapes"]


def _miou(model, root, tmp_path, name):
    out = tmp_path / f"{name}.json"
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(model),
            "--dataset",
            "cityscapes",
            "--root",
            str(root),
            "--split",
            "val",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n_images"] == 4
    return report["mIoU"]


def test_eval_with_artifacts_equals_eager(artifacts, tiny_weights, minicity, tmp_path):
    eager = _miou(tiny_weights, minicity, tmp_path, "eager")
    for fmt, artifact in artifacts.items():
        assert _miou(artifact.folder, minicity, tmp_path, fmt) == pytest.approx(eager, abs=0.01), fmt


@pytest.mark.slow
def test_trained_run_exports_and_evaluates_like_eager(minicity, tmp_path):
    recipe = {
        "model": {"preset": "tiny-deeplabv2"},
        "data": {
            "source": {
                "name": "cityscapes",
                "root": str(minicity),
                "split": "train",
                "batch_size": 2,
                "pipeline": [{"random_crop": {"size": [64, 128]}}, {"flip": 0.5}],
            }
        },
        "optim": {
            "type": "adamw",
            "lr": 2e-3,
            "weight_decay": 0.01,
            "custom_keys": {"head": {"lr_mult": 10.0}},
        },
        "schedule": {"iters": 40, "power": 1.0},
        "stages": [{"name": "source", "method": "source_only"}],
        "device": "cpu",
        "workers": 0,
        "log_every": 20,
        "checkpoint_every": 40,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(path), "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "source" / "student.safetensors").is_file()

    eager = _miou(run, minicity, tmp_path, "eager")
    for fmt in ("torchscript", "onnx"):
        out = tmp_path / f"model-{fmt}"
        result = runner.invoke(
            app, ["export", str(run), "--format", fmt, "--out", str(out)]
        )  # MiniCity parity crops
        assert result.exit_code == 0, result.output
        meta = json.loads((out / "model.json").read_text())
        assert meta["name"] == "run" and meta["source"]["preset"] == "tiny-deeplabv2"
        assert _miou(out, minicity, tmp_path, fmt) == pytest.approx(eager, abs=0.01), fmt
