"""The stage runner: outputs and DONE markers, skipping, --stage, --resume guard, run-folder binding."""

import json

import pytest
import torch
from typer.testing import CliRunner

import tests.train.tiny  # noqa: E402,F401  (registers the test methods)
from adaptseg.cli.app import app
from adaptseg.errors import UserError
from adaptseg.models import build_model, load_weights
from adaptseg.train.logger import read_scalars
from adaptseg.train.pipeline import run_recipe, stage_complete
from tests.train.tiny import MICRO_PRESET, make_split, tiny_recipe

TWO_STAGES = {
    "stages": [
        {"name": "source", "method": "source_only", "iters": 4},
        {
            "name": "finetune",
            "method": "source_only",
            "iters": 2,
            "init_from": "source/student.safetensors",
            "overrides": {"optim": {"lr": 0.001}},
        },
    ]
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_split(tmp_path_factory.mktemp("data"), n=6)


def test_two_stages_run_in_order_then_skip(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data, **TWO_STAGES)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="run stage 'source' first"):
        run_recipe(recipe, out=out, stage="finetune")
    results = run_recipe(recipe, out=out)
    assert [(r.name, r.status) for r in results] == [("source", "ran"), ("finetune", "ran")]
    for stage in ("source", "finetune"):
        done = json.loads((out / stage / "DONE").read_text())
        assert done["outputs"] == ["student.safetensors", "checkpoint-last.pt", "scalars.csv"]
        assert stage_complete(out / stage)
    assert (out / "recipe.yaml").is_file()
    # each stage ran its own iterations with its own lr (finetune: base 1e-3, head group ×10)
    assert max(i for i, _ in read_scalars(out / "source" / "scalars.csv")["loss/ce"]) == 4
    lrs = dict(read_scalars(out / "finetune" / "scalars.csv")["lr/0"])
    assert set(lrs) == {2} and lrs[2] < 1e-3

    # finetune started from source's student: 2 small steps away from it, far from a fresh init
    def flat(path=None):
        model = build_model(MICRO_PRESET)
        if path is not None:
            load_weights(model, path)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    source, finetune = (
        flat(out / "source" / "student.safetensors"),
        flat(out / "finetune" / "student.safetensors"),
    )
    assert (finetune - source).norm() < 0.1 * (flat() - source).norm()
    # re-running skips both; --stage re-runs nothing that is complete
    assert [r.status for r in run_recipe(recipe, out=out)] == ["skipped", "skipped"]
    assert [r.status for r in run_recipe(recipe, out=out, stage="finetune")] == ["skipped"]
    # a missing output makes the stage incomplete again
    (out / "finetune" / "student.safetensors").unlink()
    assert not stage_complete(out / "finetune")


def test_task_stage_writes_files_from_earlier_outputs(tmp_path, data):
    recipe = tiny_recipe(
        tmp_path / "r.yaml",
        data,
        stages=[
            {"name": "source", "method": "source_only", "iters": 2},
            {"name": "count", "method": "test_count_weights", "init_from": "source/student.safetensors"},
        ],
    )
    results = run_recipe(recipe, out=tmp_path / "run")
    assert [(r.name, r.status, r.outputs[-1]) for r in results][1] == ("count", "ran", "count.json")
    written = json.loads((tmp_path / "run" / "count" / "count.json").read_text())
    assert written["tensors"] > 0 and written["run_by_rank"] == 0
    assert json.loads((tmp_path / "run" / "count" / "DONE").read_text())["outputs"] == ["count.json"]
    assert [r.status for r in run_recipe(recipe, out=tmp_path / "run")] == ["skipped", "skipped"]


def test_interrupted_stage_needs_resume_and_folder_is_bound_to_its_recipe(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data, iters=3)
    out = tmp_path / "run"
    run_recipe(recipe, out=out)
    (out / "source" / "DONE").unlink()  # as if killed after the last checkpoint
    with pytest.raises(UserError, match="--resume"):
        run_recipe(recipe, out=out)
    assert [r.status for r in run_recipe(recipe, out=out, resume=True)] == ["resumed"]
    assert stage_complete(out / "source")
    # runtime keys may change between runs, results-changing keys may not
    assert run_recipe(recipe, ["log_every=1", "workers=1"], out=out)[0].status == "skipped"
    with pytest.raises(UserError, match="first difference: 'optim.lr'"):
        run_recipe(recipe, ["optim.lr=0.5"], out=out)


def test_cli_train_reports_recipe_errors_in_one_line(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data)
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(recipe), "--set", "optim.lrr=1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "unknown key 'optim.lrr'" in result.output and "did you mean 'optim.lr'" in result.output
    typo = tiny_recipe(tmp_path / "typo.yaml", data, stages=[{"name": "source", "method": "source_onyl"}])
    result = runner.invoke(app, ["train", str(typo), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "did you mean 'source_only'" in result.output
    bad_option = tiny_recipe(
        tmp_path / "opt.yaml",
        data,
        stages=[{"name": "source", "method": "source_only", "options": {"loss_normalise": "all_pixels"}}],
    )
    result = runner.invoke(app, ["train", str(bad_option), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "did you mean 'loss_normalize'" in result.output
    result = runner.invoke(app, ["train", str(recipe), "--stage", "nope", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no stage 'nope'" in result.output


def test_cli_train_runs_a_recipe(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data, iters=2)
    result = CliRunner().invoke(
        app, ["train", str(recipe), "--out", str(tmp_path / "o"), "--set", "log_every=1"]
    )
    assert result.exit_code == 0, result.output
    assert stage_complete(tmp_path / "o" / "source")
    state = torch.load(tmp_path / "o" / "source" / "checkpoint-last.pt", weights_only=True)
    assert state["iteration"] == 2 and set(state["models"]) == {"student"}
