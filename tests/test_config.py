"""Recipes: extends chains, --set overrides, strict validation with nearest-key hints."""

from __future__ import annotations

import pytest
from pydantic import Field

from adaptseg.config import (
    StrictModel,
    apply_overrides,
    deep_merge,
    dump_recipe,
    load_recipe,
    load_yaml,
    override_at,
    parse_override,
)
from adaptseg.errors import UserError


class Optim(StrictModel):
    type: str = "adamw"
    lr: float = 6e-5
    betas: tuple[float, float] = (0.9, 0.999)


class Recipe(StrictModel):
    name: str
    iters: int = 100
    optim: Optim = Field(default_factory=Optim)
    tags: list[str] = Field(default_factory=list)


def test_deep_merge_merges_mappings_and_replaces_the_rest():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    out = deep_merge(base, {"a": {"y": [3]}, "c": 2})
    assert out == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}  # input untouched


def test_extends_chain_is_resolved_relative_to_each_file(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "root.yaml").write_text("name: root\niters: 10\noptim: {lr: 0.1}\n")
    (tmp_path / "base" / "mid.yaml").write_text("extends: root.yaml\noptim: {type: sgd}\n")
    (tmp_path / "child.yaml").write_text("extends: base/mid.yaml\niters: 20\n")
    data = load_yaml(tmp_path / "child.yaml")
    assert data == {"name": "root", "iters": 20, "optim": {"lr": 0.1, "type": "sgd"}}


def test_extends_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(UserError, match="circular"):
        load_yaml(tmp_path / "a.yaml")


def test_overrides_are_yaml_typed():
    assert parse_override("optim.lr=1e-4") == (["optim", "lr"], 1e-4)
    assert parse_override("tags=[a, b]") == (["tags"], ["a", "b"])
    assert parse_override("flag=true") == (["flag"], True)
    out = apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=0.5", "new.key=3"])
    assert out == {"optim": {"lr": 0.5}, "new": {"key": 3}}
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_override("optim.lr")


def test_override_of_an_anchored_mapping_changes_only_that_place(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("stages:\n  - {name: a, options: &o {t: 1}}\n  - {name: b, options: *o}\n")
    out = apply_overrides(load_yaml(path), ["stages.1.options.t=2"])
    assert [s["options"]["t"] for s in out["stages"]] == [1, 2]


def test_overrides_index_lists():
    data = {"stages": [{"name": "a", "iters": 10}, {"name": "b", "iters": 20}]}
    out = apply_overrides(data, ["stages.1.iters=5", "stages.0.options.t=0.9"])
    assert out["stages"] == [{"name": "a", "iters": 10, "options": {"t": 0.9}}, {"name": "b", "iters": 5}]
    assert data["stages"][1]["iters"] == 20  # the input is not modified
    with pytest.raises(UserError, match="not an index of stages"):
        apply_overrides(data, ["stages.2.iters=5"])
    with pytest.raises(UserError, match="not an index"):
        apply_overrides(data, ["stages.b.iters=5"])


def test_load_recipe_validates_and_round_trips(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: demo\noptim: {lr: 0.01}\n")
    recipe = load_recipe(Recipe, path, ["iters=7"])
    assert recipe.iters == 7 and recipe.optim.lr == 0.01 and recipe.optim.type == "adamw"
    (tmp_path / "dumped.yaml").write_text(dump_recipe(recipe))
    assert load_recipe(Recipe, tmp_path / "dumped.yaml") == recipe


def test_unknown_nested_key_names_file_and_nearest_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: demo\noptim: {lrr: 0.01}\n")
    with pytest.raises(UserError) as err:
        load_recipe(Recipe, path)
    msg = str(err.value)
    assert str(path) in msg and "optim.lrr" in msg and "did you mean 'optim.lr'" in msg
    assert "\n" not in msg


def test_unknown_top_level_key_and_bad_value(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: demo\niter: 5\n")
    with pytest.raises(UserError, match="did you mean 'iters'"):
        load_recipe(Recipe, path)
    path.write_text("name: demo\niters: many\n")
    with pytest.raises(UserError, match="bad value for 'iters'"):
        load_recipe(Recipe, path)
    path.write_text("iters: 3\n")
    with pytest.raises(UserError, match="missing required key 'name'"):
        load_recipe(Recipe, path)


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_yaml(path)
    with pytest.raises(UserError, match="recipe file not found"):
        load_yaml(tmp_path / "nope.yaml")


def test_errors_name_the_override_that_wrote_the_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: demo\n")
    with pytest.raises(UserError) as err:
        load_recipe(Recipe, path, ["iters=3", "optim.lrr=0.1"])
    assert str(err.value).startswith("--set optim.lrr=0.1 (overriding ") and "did you mean 'optim.lr'" in str(
        err.value
    )
    with pytest.raises(UserError, match=r"^--set optim=3 \(overriding .*\): bad value for 'optim'"):
        load_recipe(Recipe, path, ["optim=3"])
    path.write_text("name: demo\noptim: {lrr: 0.1}\n")  # the file's own mistake still names the file
    with pytest.raises(UserError, match=f"^{path}: unknown key 'optim.lrr'"):
        load_recipe(Recipe, path, ["optim.lr=0.2"])


def test_override_at_matches_keys_above_and_below_the_error():
    overrides = ["iters=3", "optim={type: x}", "optim.lr=2", "stages.0.options.k=1"]
    assert override_at(overrides, ("optim", "lr")) == "optim.lr=2"  # the last writer wins
    assert override_at(overrides, ("optim", "betas")) == "optim={type: x}"
    assert override_at(overrides, ("stages", 0, "options", "k")) == "stages.0.options.k=1"
    assert override_at(overrides, ("stages", 1, "options", "k")) is None
    assert override_at(overrides, ("name",)) is None


def test_missing_extends_parent_names_the_child(tmp_path):
    (tmp_path / "child.yaml").write_text("extends: base/nope.yaml\nname: x\n")
    with pytest.raises(UserError) as err:
        load_yaml(tmp_path / "child.yaml")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'child.yaml'}: 'extends: base/nope.yaml'") and "fix:" in msg
