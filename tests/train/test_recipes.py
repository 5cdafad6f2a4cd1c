"""Every shipped training recipe validates, names real presets/datasets/methods, and builds its pipelines;
the source-only recipes carry the seeds' hyperparameters."""

from pathlib import Path

import pytest

from adaptseg.config import load_recipe, load_yaml
from adaptseg.data.datasets import dataset_class
from adaptseg.data.transforms import build_pipeline
from adaptseg.infer import load_preset as load_inference_preset
from adaptseg.models import load_preset
from adaptseg.train.config import Recipe, stage_recipe
from adaptseg.train.pipeline import check_recipe, run_recipe, stage_complete

TRAIN = Path(__file__).resolve().parents[2] / "train"
#: every recipe under train/ (bases start with "_"; other YAML there, e.g. inference presets, has no stages)
RECIPES = sorted(
    p
    for p in TRAIN.rglob("*.yaml")
    if not p.name.startswith("_") and "_base" not in p.parts and "stages" in load_yaml(p)
)


def test_the_source_only_recipes_exist():
    names = {p.relative_to(TRAIN).as_posix() for p in RECIPES}
    for bench in ("gta5-cityscapes", "synthia-cityscapes", "synscapes-cityscapes", "cityscapes"):
        assert f"source_only/{bench}.yaml" in names and f"source_only/{bench}-dlv2.yaml" in names
    assert "source_only/minicity-gta5.yaml" in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(TRAIN).as_posix())
def test_recipe_is_valid(path):
    recipe = load_recipe(Recipe, path)
    check_recipe(recipe, path)
    load_preset(recipe.model.preset)
    for stream in recipe.data.values():
        dataset_class(stream.name)
        build_pipeline(stream.pipeline)
    if recipe.eval.dataset is not None:
        dataset_class(recipe.eval.dataset.name)
        if recipe.eval.preset:
            load_inference_preset(recipe.eval.preset)


def test_daformer_and_deeplabv2_hyperparameters():
    daformer = stage_recipe(r := load_recipe(Recipe, TRAIN / "source_only/gta5-cityscapes.yaml"), r.stages[0])
    assert (daformer.optim.type, daformer.optim.lr, daformer.optim.weight_decay) == ("adamw", 6e-5, 0.01)
    assert (
        daformer.optim.custom_keys["head"].lr_mult == 10
        and daformer.optim.custom_keys["norm"].decay_mult == 0
    )
    s = daformer.schedule
    assert (s.iters, s.power, s.warmup, s.warmup_iters, s.warmup_ratio) == (40000, 1.0, "linear", 1500, 1e-6)
    assert (
        daformer.data["source"].batch_size == 2
        and daformer.stages[0].options["loss_normalize"] == "all_pixels"
    )
    dlv2 = load_recipe(Recipe, TRAIN / "source_only/gta5-cityscapes-dlv2.yaml")
    assert (dlv2.optim.type, dlv2.optim.lr, dlv2.optim.momentum, dlv2.optim.weight_decay) == (
        "sgd",
        2.5e-4,
        0.9,
        5e-4,
    )
    assert (dlv2.schedule.iters, dlv2.schedule.power, dlv2.schedule.warmup) == (80000, 0.9, None)
    assert dlv2.stages[0].options == {"loss_normalize": "valid_pixels", "align_corners": True}
    assert load_recipe(Recipe, TRAIN / "source_only/synthia-cityscapes.yaml").eval.protocol == 16


def test_minicity_recipe_runs_on_a_fresh_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTSEG_MINICITY", str(tmp_path / "cache"))  # nothing generated yet
    overrides = [
        "minicity.size=[64,128]",
        "minicity.images=4",
        "schedule.iters=2",
        "schedule.warmup_iters=1",
        "eval.every=2",
        "workers=0",
    ]
    run_recipe(TRAIN / "source_only/minicity-gta5.yaml", overrides, out=tmp_path / "run")
    assert stage_complete(tmp_path / "run" / "source")
    assert (tmp_path / "cache" / "s0-64x128-n4" / "gta5" / "minicity.json").is_file()
    assert (tmp_path / "cache" / "s0-64x128-n4" / "cityscapes" / "leftImg8bit" / "val").is_dir()
