"""The CLI skeleton: every command is listed; input errors are one line with exit status 2."""

from __future__ import annotations

from typer.testing import CliRunner

from adaptseg.cli.app import app

runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("train", "pseudo-label", "export", "infer", "eval", "demo", "data"):
        assert cmd in result.output


def test_user_error_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["data", "minicity", "--out", str(tmp_path), "--size", "banana"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --size 'banana' is not HxW")
    assert "Traceback" not in result.output
