"""Errors a user can act on.

Every problem caused by input (a missing dataset folder, an unreadable image, a wrong config key, a
shape mismatch) is raised as :class:`UserError` with one line that names the file and the fix. The CLI
prints it as ``error: <message>`` and exits with status 2 — never a traceback from deep inside.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input, explained in one line (what, where, and how to fix it)."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        parts = [f"{path}: {message}" if path is not None else message]
        if fix:
            parts.append(f"fix: {fix}")
        super().__init__(" — ".join(parts).replace("\n", " "))


class NotBuiltError(UserError):
    """A command or option whose implementation has not landed yet."""
