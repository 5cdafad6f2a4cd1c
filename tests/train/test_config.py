"""The recipe schema: strict keys, stage overrides, init_from shorthand, method registry and contexts."""

import pytest
import torch

from adaptseg.config import validate
from adaptseg.errors import UserError
from adaptseg.methods import get_method, list_methods
from adaptseg.methods.source_only import SourceOnly
from adaptseg.train.config import CheckpointRef, Recipe, stage_recipe
from tests.train.tiny import make_context, recipe_dict


def test_stage_overrides_and_iters_apply_to_that_stage_only(tmp_path):
    data = recipe_dict(
        tmp_path,
        stages=[
            {"name": "r1", "method": "source_only"},
            {
                "name": "r2",
                "method": "source_only",
                "iters": 3,
                "init_from": "r1/student.safetensors",
                "overrides": {"optim": {"lr": 1e-4}, "amp": "bf16"},
            },
        ],
    )
    recipe = validate(Recipe, data)
    r1, r2 = (stage_recipe(recipe, s) for s in recipe.stages)
    assert (r1.optim.lr, r1.schedule.iters, r1.amp) == (0.01, 6, "auto")
    assert (r2.optim.lr, r2.schedule.iters, r2.amp) == (1e-4, 3, "bf16")
    assert r2.optim.momentum == 0.9  # merged, not replaced
    assert recipe.stages[1].init_from == {"student": CheckpointRef(path="r1/student.safetensors")}


def test_recipe_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="did you mean 'schedule.warmup_iters'"):
        validate(Recipe, recipe_dict(tmp_path, schedule={"iters": 5, "warmup_iter": 10}))
    dup = recipe_dict(tmp_path, stages=[{"name": "a", "method": "source_only"}, {"name": "a", "method": "x"}])
    with pytest.raises(UserError, match="used twice"):
        validate(Recipe, dup)
    recipe = validate(
        Recipe,
        recipe_dict(
            tmp_path, stages=[{"name": "a", "method": "source_only", "overrides": {"optim": {"typ": "sgd"}}}]
        ),
    )
    with pytest.raises(UserError, match="stage 'a' overrides.*did you mean 'optim.type'"):
        stage_recipe(recipe, recipe.stages[0], source="r.yaml")
    with pytest.raises(UserError, match="no stage 'b'"):
        recipe.stage("b")


def test_registry_and_context_helpers(tmp_path):
    assert get_method("source_only") is SourceOnly and "source_only" in list_methods()
    with pytest.raises(UserError, match="did you mean 'source_only'"):
        get_method("sourceonly")
    ctx = make_context(tmp_path, tmp_path)
    # per-(iteration, key) generators: reproducible, distinct across iterations and keys
    draw = lambda *a: torch.rand(3, generator=ctx.generator(*a)).tolist()  # noqa: E731
    assert draw(5, "mix") == draw(5, "mix") != draw(6, "mix")
    assert draw(5, "mix") != draw(5, "jitter")
    with pytest.raises(UserError, match="file not found"):
        ctx.resolve("missing.safetensors")
    ctx.stage_names = ("source",)
    with pytest.raises(UserError, match="output of stage 'source'.*run stage 'source' first"):
        ctx.resolve("source/student.safetensors")
    # the student is built identically every time (same seed), whatever ran before
    torch.rand(10)
    a = ctx.build_model()
    torch.rand(10)
    b = ctx.build_model()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
