"""Shared checks of the bad-input and fault audit (issue: nothing lost, nothing silently wrong).

Every audit case asserts four things about a failing command:

* the exit status (2 for input errors, unless the case says otherwise),
* that stderr is exactly one line, ``error: …``, naming the file and the fix,
* that no traceback reaches the user,
* that nothing the user had is destroyed and no partial or temporary file is left behind
  (:func:`snapshot` before, :func:`assert_unchanged` / :func:`assert_no_partials` after).

Cases call the CLI in-process through :func:`cli` (fast) or in a child process through :func:`cli_process`
when the case needs signals, a second process or the real entry point.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

#: names that only a crashed or half-finished write leaves behind
PARTIAL_MARKERS = (".tmp", ".partial", ".old", ".incomplete")


@dataclass
class Outcome:
    """What a command left: its exit status and its two streams."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def cli(*args: str | Path) -> Outcome:
    """Run ``adaptseg ARGS`` in this process (the same Typer app the console script runs)."""
    from adaptseg.cli.app import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    stderr = getattr(result, "stderr", "") or ""
    stdout = result.stdout if stderr else result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # an exception that escaped the CLI's error handling is what a user would see as a traceback
        import traceback

        stderr += "".join(traceback.format_exception(result.exception))
    return Outcome(result.exit_code, stdout, stderr)


def cli_process(
    *args: str | Path, cwd: Path | None = None, timeout: float = 300, env: dict | None = None, **popen
) -> Outcome:
    """Run ``python -m adaptseg ARGS`` in a child process (real entry point, real signals)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "adaptseg", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def assert_user_error(outcome: Outcome, *names: str | Path, exit_code: int = 2) -> str:
    """Exit status, one ``error:`` line naming each of ``names`` (paths, keys, options), no traceback.

    Returns the line, for case-specific assertions on the fix it suggests.
    """
    assert "Traceback" not in outcome.stderr + outcome.stdout, outcome.stderr
    assert outcome.exit_code == exit_code, (outcome.exit_code, outcome.stderr, outcome.stdout)
    lines = outcome.error_lines
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{outcome.stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    for name in names:
        assert str(name) in line, f"{name!r} not named in: {line}"
    return line


def snapshot(root: Path) -> dict[str, str]:
    """Relative path → content hash (or ``<dir>``) of everything under ``root``."""
    state: dict[str, str] = {}
    if not root.exists():
        return state
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        state[rel] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def assert_unchanged(root: Path, before: dict[str, str]) -> None:
    """Nothing under ``root`` was created, removed or modified since :func:`snapshot`."""
    after = snapshot(root)
    removed = sorted(set(before) - set(after))
    added = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (removed or added or changed), f"removed {removed}, added {added}, changed {changed}"


def assert_no_partials(root: Path) -> None:
    """No temporary or half-written file (``*.tmp``, ``*.partial``, ``.*.old`` …) anywhere under ``root``."""
    left = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if any(marker in p.name for marker in PARTIAL_MARKERS)
    ]
    assert not left, f"partial files left behind: {left}"
