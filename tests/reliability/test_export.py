# ruff: noqa: F811 - the export tests' fixtures are imported by name below and requested as arguments
"""Audit: bad input and faults around ``adaptseg export`` and opening exported artifacts (issue 15).

Each case is a regression test: the exit status, one ``error:`` line naming the file and the fix, no
traceback, nothing of the user's destroyed and no partial or temporary folder left behind. Cases that
already behaved well before the issue are kept so that they stay that way.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from tests.export.conftest import (  # noqa: F401 - fixtures
    TINY,
    artifact_copy,
    artifacts,
    calib_dir,
    fast_profile,
    seeded_weights,
    tiny_weights,
)
from tests.reliability.audit import assert_no_partials, assert_unchanged, assert_user_error, cli, snapshot


@pytest.fixture
def export_args(fast_profile, calib_dir):
    """The fast parity settings every successful export here uses."""
    return ["--profile", str(fast_profile), "--calib", str(calib_dir), "--crop", "32x64"]


def infer_with(model, calib_dir, out):
    return cli("infer", "--model", model, "--folder", calib_dir, "--out", out, "--device", "cpu")


# ------------------------------------------------------------------------------------------- the model
def test_missing_weights_file(tmp_path):
    missing = tmp_path / "runs" / "nope.safetensors"
    line = assert_user_error(cli("export", missing, "--format", "onnx", "--out", tmp_path / "a"), missing)
    assert "no such file or folder" in line and "fix:" in line
    assert list(tmp_path.iterdir()) == []


def test_mistyped_run_folder_is_no_such_path(tmp_path):
    """Issue 15, defect 8: a mistyped run folder is "no such path", not "unknown model preset"."""
    missing = tmp_path / "runs" / "sourc-only"
    line = assert_user_error(cli("export", missing, "--format", "onnx"), missing)
    assert "no such file or folder" in line and "unknown model preset" not in line
    line = assert_user_error(cli("export", "tiny-deeplabv3", "--format", "onnx"), "tiny-deeplabv3")
    assert "nor a model preset" in line and "did you mean the preset 'tiny-deeplabv2'" in line


def test_weights_of_another_preset_name_the_option_that_fixes_it(tmp_path, tiny_weights):
    """Issue 15, defect 8: the fix names --arch (a real option), not prefix=/format=/strict=False."""
    before = snapshot(tiny_weights.parent)
    line = assert_user_error(
        cli("export", tiny_weights, "--format", "onnx", "--arch", "tiny-daformer", "--out", tmp_path / "a"),
        tiny_weights,
        "--arch",
    )
    assert "do not fit model preset 'tiny-daformer'" in line and "strict=False" not in line
    assert_unchanged(tiny_weights.parent, before)
    assert not (tmp_path / "a").exists()


def test_weights_saved_as_pt_ask_for_arch_then_export(tmp_path, tiny_weights, export_args):
    """Issue 15, defect 8: valid weights saved with torch.save as .pt were taken for a TorchScript artifact."""
    from adaptseg.models import build_model, load_weights

    model = build_model(TINY)
    load_weights(model, tiny_weights)
    pt = tmp_path / "weights.pt"
    torch.save(model.state_dict(), pt)
    line = assert_user_error(cli("export", pt, "--format", "onnx", "--out", tmp_path / "a", *export_args), pt)
    assert "--arch NAME" in line and "adaptseg models list" in line
    done = cli("export", pt, "--format", "onnx", "--arch", TINY, "--out", tmp_path / "a", *export_args)
    assert done.exit_code == 0, done.stderr
    assert (tmp_path / "a" / "model.json").is_file()


def test_exporting_an_artifact_again(tmp_path, artifacts):
    folder = artifacts["onnx"].folder
    line = assert_user_error(cli("export", folder, "--format", "onnx", "--out", tmp_path / "b"), folder)
    assert "exported artifact already" in line


# ------------------------------------------------------------------------------------------- options
def test_unknown_format_lists_the_registered_ones(tmp_path, tiny_weights):
    line = assert_user_error(cli("export", tiny_weights, "--format", "png", "--out", tmp_path / "a"), "png")
    assert all(name in line for name in ("torchscript", "onnx", "trt"))
    assert list(tmp_path.iterdir()) == []


def test_unknown_profile_key_names_the_profile_and_the_nearest_key(tmp_path, tiny_weights):
    profile = tmp_path / "mine.yaml"
    profile.write_text(yaml.safe_dump({"precison": "fp16"}))
    line = assert_user_error(
        cli("export", tiny_weights, "--format", "onnx", "--profile", profile, "--out", tmp_path / "a"),
        profile,
    )
    assert "precision" in line
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------- --out
def folder_of_other_files(tmp_path):
    out = tmp_path / "results"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "data.csv").write_text("1,2")
    return out


def test_out_on_a_folder_of_other_files_is_refused_without_force(tmp_path, tiny_weights, export_args):
    out = folder_of_other_files(tmp_path)
    before = snapshot(tmp_path)
    line = assert_user_error(cli("export", tiny_weights, "--format", "onnx", "--out", out, *export_args), out)
    assert "not an adaptseg artifact" in line and "--force" not in line.split("fix:")[1]
    assert_unchanged(tmp_path, before)


def test_out_on_a_folder_of_other_files_is_refused_with_force(tmp_path, tiny_weights, export_args):
    """Issue 15, defect 1: --force deleted whatever the folder held."""
    out = folder_of_other_files(tmp_path)
    before = snapshot(tmp_path)
    assert_user_error(
        cli("export", tiny_weights, "--format", "onnx", "--out", out, "--force", *export_args), out
    )
    assert_unchanged(tmp_path, before)


def test_an_artifact_with_a_file_of_the_users_is_not_replaced(
    tmp_path, tiny_weights, artifact_copy, export_args
):
    folder = artifact_copy("onnx")
    (folder / "README.txt").write_text("my notes about this model")
    before = snapshot(tmp_path)
    assert_user_error(
        cli("export", tiny_weights, "--format", "onnx", "--out", folder, "--force", *export_args), folder
    )
    assert_unchanged(tmp_path, before)


def test_force_replaces_an_artifact(tmp_path, tiny_weights, artifact_copy, export_args):
    folder = artifact_copy("onnx")
    line = assert_user_error(
        cli("export", tiny_weights, "--format", "onnx", "--out", folder, *export_args), folder
    )
    assert "already exists" in line and "--force" in line
    done = cli("export", tiny_weights, "--format", "onnx", "--out", folder, "--force", *export_args)
    assert done.exit_code == 0, done.stderr
    assert json.loads((folder / "model.json").read_text())["crop"] == [32, 64]
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.onnx"]
    assert_no_partials(tmp_path)


@pytest.mark.parametrize("force", [False, True])
def test_out_dot_is_the_working_directory(tmp_path, monkeypatch, tiny_weights, export_args, force):
    """Issue 15, defect 1: ``--out .`` raised a traceback and left a ``..*.old`` folder behind."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    line = assert_user_error(
        cli(
            "export",
            tiny_weights,
            "--format",
            "onnx",
            "--out",
            ".",
            *(["--force"] if force else []),
            *export_args,
        ),
        work,
    )
    assert "working directory" in line
    assert_unchanged(tmp_path, before)
    assert_no_partials(tmp_path)


def test_out_under_a_regular_file(tmp_path, tiny_weights, export_args):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "model"
    before = snapshot(tmp_path)
    assert_user_error(cli("export", tiny_weights, "--format", "onnx", "--out", out, *export_args), blocker)
    assert_unchanged(tmp_path, before)


# ------------------------------------------------------------------------------------------- faults
def test_full_disk_during_export_keeps_the_previous_artifact(
    tmp_path, monkeypatch, tiny_weights, artifact_copy, export_args
):
    """Issue 15, defect 6: ENOSPC blamed the ONNX exporter; now the path and the cause, exit 2."""
    import torch.onnx

    real_export = torch.onnx.export

    def disk_full(*args, **kwargs):
        real_export(*args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(args[2]))

    monkeypatch.setattr(torch.onnx, "export", disk_full)
    folder = artifact_copy("onnx")
    before = snapshot(tmp_path)
    line = assert_user_error(
        cli("export", tiny_weights, "--format", "onnx", "--out", folder, "--force", *export_args),
        "model.onnx",
    )
    assert "no space left on device" in line and "free some space" in line and "torch.onnx" not in line
    assert_unchanged(tmp_path, before)
    assert_no_partials(tmp_path)


def test_unwritable_folder_during_export(tmp_path, monkeypatch, tiny_weights, export_args):
    """Tests run as root, so chmod would not stop the write: the refusal is simulated where the folder is made."""
    from adaptseg.export import staging

    def refuse(dest, kind):
        raise PermissionError(errno.EACCES, "Permission denied", str(dest.parent))

    monkeypatch.setattr(staging, "_make_temporary", refuse)
    line = assert_user_error(
        cli("export", tiny_weights, "--format", "onnx", "--out", tmp_path / "a", *export_args), tmp_path
    )
    assert "permission denied" in line and "writable" in line
    assert list(tmp_path.iterdir()) == []


def test_temporary_folders_of_killed_exports_are_cleaned_and_live_ones_kept(
    tmp_path, tiny_weights, artifact_copy, export_args
):
    """Issue 15, defect 8: a SIGKILLed export left ``.<name>.*.tmp`` that no later run removed."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        parent = tmp_path / "models"
        parent.mkdir()
        killed = parent / f".a.{dead.pid}-0badc0de.tmp"
        (killed / "model.onnx").parent.mkdir()
        (killed / "model.onnx").write_bytes(b"half an onn")
        running = parent / f".b.{live.pid}-0badc0de.tmp"
        running.mkdir()
        # a killed --force re-export that had already moved the previous artifact aside: put back
        moved = parent / f".c.{dead.pid}-0badc0de.old"
        moved.mkdir()
        shutil.copytree(artifact_copy("onnx"), moved / "c")
        done = cli("export", tiny_weights, "--format", "onnx", "--out", parent / "a", *export_args)
        assert done.exit_code == 0, done.stderr
        assert not killed.exists() and not moved.exists()
        assert running.is_dir(), "the temporary folder of a running export was removed"
        assert (parent / "c" / "model.json").is_file()
        assert sorted(p.name for p in parent.iterdir()) == sorted(["a", "c", running.name])
    finally:
        live.kill()
        live.wait()


def test_artifact_folders_follow_the_umask(tmp_path, tiny_weights, export_args):
    """Issue 15, defect 8: artifact folders were created 0700 whatever the umask."""
    old = os.umask(0o022)
    try:
        assert (
            cli("export", tiny_weights, "--format", "onnx", "--out", tmp_path / "a", *export_args).exit_code
            == 0
        )
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "a" / "model.onnx").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------------------------------- opening artifacts
def test_truncated_model_file(tmp_path, artifact_copy, calib_dir):
    folder = artifact_copy("onnx")
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    before = snapshot(folder)
    line = assert_user_error(infer_with(folder, calib_dir, tmp_path / "out"), folder / "model.onnx")
    assert "truncated" in line and "re-export" in line
    assert_unchanged(folder, before)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))


def test_model_json_missing(tmp_path, artifact_copy, calib_dir):
    folder = artifact_copy("onnx")
    (folder / "model.json").unlink()
    line = assert_user_error(infer_with(folder / "model.onnx", calib_dir, tmp_path / "out"), folder)
    assert "no model.json beside" in line and "adaptseg export" in line


def test_model_json_corrupt(tmp_path, artifact_copy, calib_dir):
    folder = artifact_copy("torchscript")
    (folder / "model.json").write_text('{"name": "x", "format": ')
    line = assert_user_error(infer_with(folder, calib_dir, tmp_path / "out"), folder / "model.json")
    assert "unreadable model.json" in line and "re-export" in line


def test_model_json_with_a_key_missing(tmp_path, artifact_copy, calib_dir):
    folder = artifact_copy("onnx")
    meta = json.loads((folder / "model.json").read_text())
    del meta["crop"]
    (folder / "model.json").write_text(json.dumps(meta))
    assert_user_error(infer_with(folder, calib_dir, tmp_path / "out"), folder / "model.json", "crop")


def test_model_file_listed_in_model_json_missing(tmp_path, artifact_copy, calib_dir):
    folder = artifact_copy("onnx")
    (folder / "model.onnx").unlink()
    line = assert_user_error(infer_with(folder, calib_dir, tmp_path / "out"), folder, "model.onnx")
    assert "missing" in line and "re-export" in line


def test_int8_with_too_few_calibration_images_names_the_folder(tmp_path, calib_dir):
    """int8 is checked on images that did not calibrate it: a folder with no images to spare is refused
    before anything is written (issue 20)."""
    before = snapshot(calib_dir)
    out = tmp_path / "int8"
    outcome = cli(
        "export",
        TINY,
        "--format",
        "onnx",
        "--profile",
        "onnx-int8",
        "--calib",
        calib_dir,
        "--out",
        out,
        "--crop",
        "32x64",
    )
    line = assert_user_error(outcome, calib_dir)
    assert "other images to check parity on" in line and "fix:" in line
    assert not out.exists()
    assert_unchanged(calib_dir, before)
    assert_no_partials(tmp_path)
