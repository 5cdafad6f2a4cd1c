"""``model.init: pretrained:minicity-synscapes`` (adaptseg.models.pretrained): MiniCity's stand-in for ImageNet.

The name resolves to the shipped encoder of the preset's backbone type, loaded as an ImageNet backbone is
(``backbone.*`` only, the heads from their seeded init), in every MiniCity recipe and in the demo.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adaptseg.config import load_recipe, validate
from adaptseg.demo.pipeline import PRETRAINED, Demo, DemoOptions
from adaptseg.errors import UserError
from adaptseg.models import build_model
from adaptseg.models.pretrained import ENCODERS
from adaptseg.train.config import Recipe, stage_recipe
from tests.methods.test_ddb import make_ctx
from tests.train.tiny import make_split, recipe_dict

REPO = Path(__file__).resolve().parents[2]
NAME = "pretrained:minicity-synscapes"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_split(tmp_path_factory.mktemp("pretrained") / "data", n=2)


context = make_ctx  # the stage's single-process CPU context (shared with the DDB tests)


@pytest.mark.parametrize(
    ("preset", "backbone_type"),
    [
        ("tiny-daformer", "mit_tiny"),
        ("tiny-deeplabv3plus", "resnet18_v1c"),
        ("tiny-deeplabv2-128", "resnet18_v1b"),
    ],
)
def test_the_name_loads_the_shipped_encoder_of_the_backbone_and_keeps_the_seeded_heads(
    preset, backbone_type, data, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the shipped file is found from any folder
    recipe = validate(Recipe, {**recipe_dict(data), "model": {"preset": preset, "init": NAME}})
    ctx = context(recipe, "source", tmp_path / "run")
    ref = ctx.init_ref("student")
    assert (ref.path, ref.prefix, ref.partial) == (
        ENCODERS["minicity-synscapes"][backbone_type],
        "backbone.",
        True,
    )
    model = ctx.build_model("student")
    shipped = load_file(REPO / ref.path)
    torch.manual_seed(ctx.recipe.seed)
    fresh = build_model(preset).state_dict()
    state = model.state_dict()
    backbone = [k for k in state if k.startswith("backbone.")]
    assert backbone and all(torch.equal(state[k], shipped[k]) for k in backbone)  # the pre-trained encoder
    head = [k for k in state if k.startswith("decode_head.")]
    assert head and all(torch.equal(state[k], fresh[k]) for k in head)  # the head: its seeded init
    assert not all(torch.equal(shipped[k], fresh[k]) for k in head)  # (the file's own head is not used)


def test_unknown_names_and_backbones_without_an_encoder_are_one_line_errors(data, tmp_path):
    recipe = validate(
        Recipe, {**recipe_dict(data), "model": {"preset": "tiny-daformer", "init": "pretrained:imagenet"}}
    )
    with pytest.raises(
        UserError,
        match="unknown pre-trained weights 'pretrained:imagenet' — fix: use one of: "
        "pretrained:minicity-synscapes",
    ):
        context(recipe, "source", tmp_path).init_ref("student")
    recipe = validate(Recipe, {**recipe_dict(data), "model": {"preset": "deeplabv2-r101-v1c", "init": NAME}})
    with pytest.raises(
        UserError,
        match=r"no encoder for backbone type 'resnet101_v1c' \(it ships for mit_tiny, resnet18_v1c, "
        r"resnet18_v1b\) — fix: .*model.init=null",
    ):
        context(recipe, "source", tmp_path).init_ref("student")


MINICITY_RECIPES = sorted(
    p
    for p in (REPO / "train").glob("*/minicity*.yaml")
    if not p.name.startswith("_") and not p.parent.name.startswith("_")
)


@pytest.mark.parametrize("path", MINICITY_RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_minicity_recipe_takes_the_switch(path, tmp_path):
    """Every stage that starts from "ImageNet" (model.init) gets the encoder of its own preset's backbone."""
    recipe = load_recipe(Recipe, path, [f"model.init={NAME}"])
    resolved = 0
    for stage in recipe.stages:
        ctx = context(recipe, stage.name, tmp_path)
        if "student" in stage.init_from:
            continue  # starts from an earlier stage's output
        ref = ctx.init_ref("student")
        assert ref is not None and (REPO / ref.path).is_file()
        assert ref.path == ENCODERS["minicity-synscapes"][ctx.preset.backbone.type]
        resolved += 1
    assert resolved >= 1


def test_atp_minicity_starts_pretrained_by_default_and_null_turns_it_off():
    assert load_recipe(Recipe, REPO / "train" / "atp" / "minicity.yaml").model.init.path == NAME
    assert (
        load_recipe(Recipe, REPO / "train" / "atp" / "minicity.yaml", ["model.init=null"]).model.init is None
    )


@pytest.mark.parametrize(
    ("method", "pretrained", "expected"),
    [("ddb", None, None), ("ddb", True, NAME), ("atp", None, NAME), ("atp", False, None)],
)
def test_the_demo_switch_sets_every_trained_model_and_the_oracle(method, pretrained, expected, tmp_path):
    demo = Demo(DemoOptions(out=tmp_path / "demo", method=method, pretrained=pretrained))
    assert PRETRAINED == NAME
    inits = [stage_recipe(demo.recipe, s).model.init for s in demo.recipe.stages]
    inits.append(demo.oracle.model.init)
    assert {None if i is None else i.path for i in inits} == {expected}
    assert demo.initial_weights() == (expected or "random")
