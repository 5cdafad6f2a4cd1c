"""The CLI skeleton: every command is listed; input errors are one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
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


def _cli_modules() -> list[str]:
    import pkgutil

    import adaptseg.cli

    return sorted(m.name for m in pkgutil.iter_modules(adaptseg.cli.__path__))


@pytest.mark.parametrize("module", _cli_modules())
def test_every_cli_module_imports_on_its_own(module):
    """No import cycle: each command module imports first in a fresh interpreter (as a plugin or a test may)."""
    result = subprocess.run(
        [sys.executable, "-c", f"import adaptseg.cli.{module}"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_an_os_error_is_one_line_naming_the_path_and_the_cause(tmp_path, monkeypatch):
    """The backstop: an OSError that no command turned into a UserError still reaches the user as one line."""
    import errno

    def busy(*args, **kwargs):
        raise OSError(errno.EBUSY, "Device or resource busy", str(tmp_path / "mc" / "x.png"))

    monkeypatch.setattr("adaptseg.data.check.check_dataset", busy)
    result = runner.invoke(app, ["data", "check", "cityscapes", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        f"error: {tmp_path / 'mc' / 'x.png'}: Device or resource busy — fix: close what holds it "
        "(another process, a mount) and try again"
    ]
