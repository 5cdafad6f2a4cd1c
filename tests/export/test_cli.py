"""`adaptseg export` on the command line, and bad artifacts reaching `adaptseg infer` as one line."""

import json

import pytest
from typer.testing import CliRunner

from adaptseg.artifact.folder import file_sha256
from adaptseg.cli.app import app
from adaptseg.cli.export import parse_crop
from adaptseg.errors import UserError
from tests.export.conftest import TINY, seeded_weights

runner = CliRunner()


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_parse_crop():
    assert (
        parse_crop("512x1024") == (512, 1024)
        and parse_crop("64×128") == (64, 128)
        and parse_crop(None) is None
    )
    for bad in ("512", "0x64", "axb"):
        with pytest.raises(UserError, match="is not HxW"):
            parse_crop(bad)


def test_refuses_to_overwrite_without_force_then_replaces(tmp_path, artifact_copy, calib_dir, fast_profile):
    folder = artifact_copy("onnx")
    before = file_sha256(folder / "model.onnx")
    weights = seeded_weights(tmp_path / "other.safetensors", seed=1)
    args = [
        "export",
        str(weights),
        "--format",
        "onnx",
        "--out",
        str(folder),
        "--calib",
        str(calib_dir),
        "--profile",
        str(fast_profile),
        "--crop",
        "64x128",
    ]
    line = _error_line(runner.invoke(app, args))
    assert "already exists" in line and "--force" in line and str(folder) in line
    assert file_sha256(folder / "model.onnx") == before

    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert f"wrote {folder / 'model.onnx'}" in result.output and "argmax agreement" in result.output
    meta = json.loads((folder / "model.json").read_text())
    assert meta["source"]["model"] == str(weights) and meta["crop"] == [64, 128]
    assert meta["file_sha256"] == file_sha256(folder / "model.onnx") != before
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no staging leftovers


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "onnx", "--crop", "64"], "--crop '64' is not HxW"),
        (["--format", "onnx", "--out", "x/model.onnx"], "--out names the artifact folder"),
        (["--format", "torchscript", "--profile", "onnx-int8"], "torchscript exports fp32/fp16, not int8"),
        (["--format", "onnx", "--profile", "nope"], "unknown export profile 'nope'"),
    ],
)
def test_bad_options_are_one_line(tmp_path, args, message):
    assert message in _error_line(runner.invoke(app, ["export", TINY, *args]))


def test_exporting_an_artifact_again_is_refused(artifacts, tmp_path):
    line = _error_line(
        runner.invoke(
            app,
            ["export", str(artifacts["onnx"].folder), "--format", "onnx", "--out", str(tmp_path / "again")],
        )
    )
    assert "exported artifact already" in line


def _infer(model, calib_dir, tmp_path):
    return runner.invoke(
        app,
        [
            "infer",
            "--model",
            str(model),
            "--folder",
            str(calib_dir),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
        ],
    )


def test_bad_artifacts_reach_infer_as_one_line(artifact_copy, calib_dir, tmp_path):
    truncated = artifact_copy("torchscript")
    data = (truncated / "model.pt").read_bytes()
    (truncated / "model.pt").write_bytes(data[:1000])
    assert "model file is truncated" in _error_line(_infer(truncated, calib_dir, tmp_path))

    no_sidecar = artifact_copy("onnx")
    (no_sidecar / "model.json").unlink()
    assert "no model.json beside the model" in _error_line(
        _infer(no_sidecar / "model.onnx", calib_dir, tmp_path)
    )


def test_artifact_runs_in_infer_and_wrong_crop_preset_is_one_line(artifacts, calib_dir, tmp_path):
    result = _infer(artifacts["onnx"].folder, calib_dir, tmp_path)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "o").rglob("*.png"))) == 3
    slide = tmp_path / "slide.yaml"
    slide.write_text("mode: slide\ncrop: [64, 64]\n")
    result = runner.invoke(
        app,
        [
            "infer",
            "--model",
            str(artifacts["onnx"].folder),
            "--folder",
            str(calib_dir),
            "--out",
            str(tmp_path / "p"),
            "--preset",
            str(slide),
            "--device",
            "cpu",
        ],
    )
    assert "runs crops of 128x256" in _error_line(result)
