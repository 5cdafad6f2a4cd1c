"""Best-on-val selection: one opt-in Trainer hook (``eval.select_best``) that every method gets."""

from __future__ import annotations

import json

import pytest
import torch

from adaptseg.config import validate
from adaptseg.data.datasets import build_dataset
from adaptseg.models import build_model, load_preset, load_weights
from adaptseg.train.config import Recipe
from adaptseg.train.evaluation import evaluate_segmentor
from adaptseg.train.logger import read_scalars
from adaptseg.train.pipeline import run_recipe
from adaptseg.train.selection import BestOnVal
from tests.train.tiny import MICRO_PRESET, make_split, recipe_dict, tiny_recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_split(tmp_path_factory.mktemp("select") / "data", n=6)
    return make_split(root, n=3, split="val", seed=5)


def evaluation(data, **switches) -> dict:
    return {
        "eval": {"every": 1, "dataset": {"name": "cityscapes", "root": str(data), "split": "val"}, **switches}
    }


def test_select_best_exports_the_best_evaluated_student_and_says_so(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data, iters=4, extra=evaluation(data, select_best=True))
    run_recipe(recipe, out=tmp_path / "run")
    stage = tmp_path / "run" / "source"
    record = json.loads((stage / "best_on_val.json").read_text())
    assert record["selected_with_target_labels"] is True and record["model"] == "student"
    history = {h["iteration"]: h["mIoU"] for h in record["history"]}
    assert list(history) == [1, 2, 3, 4]
    assert (
        record["best_mIoU"] == max(history.values())
        and history[record["best_iteration"]] == record["best_mIoU"]
    )
    # the figures are the ones the evaluation hook logs
    logged = dict(read_scalars(stage / "scalars.csv")["eval/mIoU19"])
    assert logged == pytest.approx(history)
    # student.safetensors holds the best weights, student-last.safetensors the last ones
    preset = load_preset(MICRO_PRESET)
    val = build_dataset("cityscapes", data, "val")

    def score(name: str) -> float:
        model = build_model(preset)
        load_weights(model, stage / name)
        return evaluate_segmentor(model, val, mean=preset.mean, std=preset.std).miou

    assert score("student.safetensors") == pytest.approx(record["best_mIoU"])
    assert score("student-last.safetensors") == pytest.approx(history[4])
    done = json.loads((stage / "DONE").read_text())
    assert {"student.safetensors", "student-last.safetensors", "best_on_val.json"} <= set(done["outputs"])


def test_selection_is_off_by_default(tmp_path, data):
    recipe = tiny_recipe(tmp_path / "r.yaml", data, iters=2, extra=evaluation(data))
    run_recipe(recipe, out=tmp_path / "run")
    stage = tmp_path / "run" / "source"
    assert (stage / "student.safetensors").exists()
    assert not (stage / "student-last.safetensors").exists() and not (stage / "best_on_val.json").exists()


def test_selection_needs_a_labelled_split(data):
    with pytest.raises(Exception, match="select_best needs eval.dataset"):
        validate(Recipe, recipe_dict(data, extra={"eval": {"select_best": True}}))


def test_best_keeps_the_first_of_equal_scores_and_survives_a_checkpoint():
    model = torch.nn.Linear(2, 2)
    best = BestOnVal()
    assert best.consider(10, 40.0, model) is True
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    assert best.consider(20, 40.0, model) is False and best.iteration == 10
    assert best.consider(30, 39.0, model) is False
    restored = BestOnVal()
    restored.load_state_dict(best.state_dict())
    assert (restored.iteration, restored.miou, restored.history) == (
        10,
        40.0,
        [(10, 40.0), (20, 40.0), (30, 39.0)],
    )
    assert all(torch.equal(restored.weights[k], kept[k]) for k in kept)
