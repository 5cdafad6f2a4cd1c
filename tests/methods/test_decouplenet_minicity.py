"""DecoupleNet end to end on MiniCity in seconds: source → phase 1 → soft labels (float16, top-k, float32) →
phase 2, the phase-2 student through ONNX export (parity) and eval, the compact form's bytes per pixel,
and the one-line errors of bad phase-2 inputs (audit helpers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from adaptseg.methods.decouplenet.soft_labels import soft_label_bytes
from adaptseg.train.pipeline import run_recipe, stage_complete
from tests.parity import assert_exports_with_parity_and_evaluates
from tests.reliability.audit import assert_no_partials, assert_unchanged, assert_user_error, snapshot
from tests.reliability.test_train_data import train

RECIPE = Path(__file__).resolve().parents[2] / "train" / "decouplenet" / "minicity.yaml"
TINY = ["minicity.size=[64,128]", "minicity.images=4", "workers=0", "schedule.warmup_iters=1"]
STAGES = ("source", "phase1", "soft", "soft_topk", "soft_f32", "phase2")


def smoke_recipe(folder: Path) -> Path:
    """The MiniCity recipe with a few iterations per stage, plus the top-k and float32 soft-label forms."""
    recipe = yaml.safe_load(RECIPE.read_text())
    stages = {s["name"]: s for s in recipe["stages"]}
    stages["source"]["iters"] = 3
    stages["phase1"]["iters"] = 2
    stages["phase2"]["iters"] = 2
    soft = stages["soft"]
    f32 = {**soft, "name": "soft_f32", "options": {**soft["options"], "form": "float32"}}
    topk = {**soft, "name": "soft_topk", "options": {**soft["options"], "form": "topk", "topk": 4}}
    recipe["stages"] = [stages["source"], stages["phase1"], soft, topk, f32, stages["phase2"]]
    recipe["extends"] = str(RECIPE.parent / recipe["extends"])
    path = folder / "decouplenet-smoke.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("decouplenet")
    recipe = smoke_recipe(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTSEG_MINICITY", str(root / "cache"))
        run_recipe(recipe, TINY, out=root / "run")
        yield root / "run", root / "cache", recipe


def test_every_stage_finishes_with_its_outputs(run):
    run_dir, _, _ = run
    assert all(stage_complete(run_dir / s) for s in STAGES)
    assert (run_dir / "phase1" / "source_stem.safetensors").is_file()  # g_src; C_aux and the Ds are not saved
    assert sorted(p.name for p in (run_dir / "phase1").glob("*.safetensors")) == [
        "source_stem.safetensors",
        "student.safetensors",
    ]
    thresholds = {}
    for stage, folder in (("soft", "logits"), ("soft_topk", "store"), ("soft_f32", "logits")):
        thresholds[stage] = np.load(run_dir / stage / f"{folder}_thresholds_p0.8.npy")
        assert (
            thresholds[stage].shape == (19,) and thresholds[stage].min() >= 0 and thresholds[stage].max() <= 1
        )
    # float16 logits move the thresholds (order statistics of softmax confidences) by float16 rounding only
    np.testing.assert_allclose(thresholds["soft"], thresholds["soft_f32"], atol=2e-3)
    assert len(list((run_dir / "soft_topk" / "store" / "topk").rglob("*.npz"))) == 4
    for stage, dtype in (("soft", np.float16), ("soft_f32", np.float32)):
        logits = list((run_dir / stage / "logits").glob("*_leftImg8bit.npy"))
        array = np.load(logits[0])
        assert (
            len(logits) == 4 and array.shape == (19, 8, 16) and array.dtype == dtype
        )  # at the output stride
    assert_no_partials(run_dir)


def test_compact_soft_labels_take_a_fraction_of_the_float32_bytes(run):
    run_dir, _, _ = run
    pixels = 4 * 64 * 128
    half = soft_label_bytes(run_dir / "soft")
    topk = soft_label_bytes(run_dir / "soft_topk")
    release = soft_label_bytes(run_dir / "soft_f32")
    assert release["logits"] / pixels > 19 * 4 / 64  # float32 C×h×w at stride 8 (+ npy headers)
    assert 19 * 2 / 64 < half["logits"] / pixels < 0.6 * release["logits"] / pixels  # float16: half + headers
    assert topk["topk"] / pixels < 0.25 * release["logits"] / pixels  # what phase 2 reads
    # the whole top-k store (with its full-resolution label and confidence PNGs) is still smaller
    assert sum(topk.values()) < release["logits"]


def test_the_phase_2_student_exports_to_onnx_with_parity_and_evaluates(run, tmp_path):
    run_dir, cache, _ = run
    weights = run_dir / "phase2" / "student.safetensors"
    assert_exports_with_parity_and_evaluates(weights, "onnx", next(cache.glob("*/cityscapes")), tmp_path)


# ------------------------------------------------------------------------------------- bad phase-2 inputs
def phase2_inputs(run, tmp_path: Path) -> Path:
    """A run folder holding the finished stages phase 2 reads (phase 2 itself not run yet)."""
    import shutil

    run_dir = tmp_path / "run"
    for stage in ("source", "phase1", "soft"):
        shutil.copytree(run[0] / stage, run_dir / stage)
    return run_dir


def train_phase2(run, run_dir: Path, monkeypatch, recipe: Path | None = None, *sets: str):
    monkeypatch.setenv("ADAPTSEG_MINICITY", str(run[1]))
    args = [a for s in (*TINY, *sets) for a in ("--set", s)]
    return train(recipe or run[2], run_dir, "--stage", "phase2", *args)


def test_phase_2_on_a_stage_without_soft_labels_is_one_line(run, monkeypatch, tmp_path):
    run_dir = phase2_inputs(run, tmp_path)
    recipe = yaml.safe_load(run[2].read_text())
    next(s for s in recipe["stages"] if s["name"] == "phase2")["options"]["soft_labels"] = "source"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(recipe, sort_keys=False))
    before = snapshot(run_dir)
    line = assert_user_error(train_phase2(run, run_dir, monkeypatch, bad), run_dir / "source")
    assert "no soft labels" in line and "decouplenet_soft_labels" in line
    after = snapshot(run_dir)
    assert all(after.get(k) == v for k, v in before.items())  # every earlier stage's file as it was
    assert not (run_dir / "phase2" / "student.safetensors").exists()
    assert_no_partials(run_dir)


def test_a_random_crop_in_the_whole_image_stream_is_refused_in_one_line(run, monkeypatch, tmp_path):
    run_dir = phase2_inputs(run, tmp_path)
    before = snapshot(run_dir / "soft")
    out = train_phase2(
        run, run_dir, monkeypatch, None, "data.target_full.pipeline=[{random_crop: [64, 112]}]"
    )
    line = assert_user_error(out, run[2])
    assert "random_crop" in line and "fixed resize" in line
    assert_unchanged(run_dir / "soft", before)
    assert_no_partials(run_dir)


def test_an_unreadable_thresholds_file_is_named(run, monkeypatch, tmp_path):
    run_dir = phase2_inputs(run, tmp_path)
    path = run_dir / "soft" / "logits_thresholds_p0.8.npy"
    path.write_bytes(b"not numpy")
    before = snapshot(run_dir / "soft")
    line = assert_user_error(train_phase2(run, run_dir, monkeypatch), path)
    assert "run the decouplenet_soft_labels stage again" in line
    assert_unchanged(run_dir / "soft", before)
    assert_no_partials(run_dir)


def test_resumed_logits_from_other_phase_1_weights_are_refused_in_one_line(run, monkeypatch, tmp_path):
    """A soft-label folder reuses the logits files it finds, so it records what wrote them (origin.json) and
    an interrupted stage resumed after phase 1 changed must not mix two models' logits."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    run_dir = tmp_path / "run"
    for stage in ("source", "phase1", "soft"):
        shutil.copytree(run[0] / stage, run_dir / stage)
    origin = json.loads((run_dir / "soft" / "logits" / "origin.json").read_text())
    assert origin["model_sha256"] and origin["inference"] == {"form": "float16"}
    (run_dir / "soft" / "DONE").unlink()  # as if the stage had been interrupted
    weights = run_dir / "phase1" / "student.safetensors"
    tensors = load_file(weights)
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name] + 1
    save_file(tensors, weights, metadata={"format": "pt"})
    before = snapshot(run_dir / "soft")
    monkeypatch.setenv("ADAPTSEG_MINICITY", str(run[1]))
    args = [a for s in TINY for a in ("--set", s)]
    line = assert_user_error(train(run[2], run_dir, "--stage", "soft", *args), run_dir / "soft" / "logits")
    assert "other weights" in line and "delete this one first" in line
    assert_unchanged(run_dir / "soft", before)
