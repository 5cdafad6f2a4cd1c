"""The one lookup of presets, profiles and recipes: explicit path, then ``ADAPTSEG_HOME``, then the packaged
copy (in a checkout, the top-level folders beside the package)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptseg.errors import UserError
from adaptseg.resources import EXPORT, INFER, MODELS, TRAIN, resource_dir
from tests.reliability.audit import assert_no_partials, assert_unchanged, assert_user_error, cli, snapshot

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_home(monkeypatch):
    monkeypatch.delenv("ADAPTSEG_HOME", raising=False)


@pytest.mark.parametrize("kind", [MODELS, INFER, EXPORT, TRAIN], ids=lambda k: k.folder)
def test_a_checkout_resolves_names_in_its_top_level_folders(kind):
    assert resource_dir(kind) == REPO / kind.folder
    names = kind.names()
    assert names and names == sorted(names)
    for name in names:
        assert kind.find(name) == REPO / kind.folder / f"{name}.yaml"


def test_recipe_names_have_their_method_folder_and_leave_out_bases():
    names = TRAIN.names()
    assert {"source_only/minicity-gta5", "ddb/minicity", "atp/minicity", "demo/ddb"} <= set(names)
    assert not [n for n in names if n.startswith("_") or "/_" in n]  # _base/, atp/_base.yaml: only extended
    assert TRAIN.names("*/minicity*") == [n for n in names if n.split("/")[1].startswith("minicity")]


def test_an_existing_file_is_used_as_it_is(tmp_path, monkeypatch):
    mine = tmp_path / "minicity"  # no suffix, and a shipped name: the file still wins
    mine.write_text("batch_size: 1\n")
    monkeypatch.chdir(tmp_path)
    assert INFER.find("minicity") == Path("minicity")
    assert INFER.find(mine) == mine


def test_missing_files_and_unknown_names_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"nope\.yaml: training recipe file not found — fix: check the path"):
        TRAIN.find(tmp_path / "nope.yaml")
    with pytest.raises(
        UserError,
        match="unknown training recipe 'source_only/minicity-gta6' — fix: did you mean "
        "'source_only/minicity-gta5'",
    ):
        TRAIN.find("source_only/minicity-gta6")
    with pytest.raises(
        UserError,
        match="unknown export profile 'nothing-like-it' — fix: choose one of: "
        "default, onnx-int8, trt-fp16, trt-int8",
    ):
        EXPORT.find("nothing-like-it")


def test_adaptseg_home_replaces_the_packaged_copy(tmp_path, monkeypatch):
    (tmp_path / "infer").mkdir()
    (tmp_path / "infer" / "mine.yaml").write_text("batch_size: 1\n")
    monkeypatch.setenv("ADAPTSEG_HOME", str(tmp_path))
    assert INFER.names() == ["mine"] and INFER.find("mine") == tmp_path / "infer" / "mine.yaml"
    with pytest.raises(UserError, match=r"ADAPTSEG_HOME has no export/ folder"):
        EXPORT.find("default")


def test_train_takes_a_recipe_name_and_reports_unknown_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    outcome = cli("train", "source_only/minicity-gta6", "--out", tmp_path / "run")
    line = assert_user_error(outcome, "unknown training recipe 'source_only/minicity-gta6'")
    assert "did you mean 'source_only/minicity-gta5'" in line
    assert_unchanged(tmp_path, before)  # no run folder started
    assert_no_partials(tmp_path)
