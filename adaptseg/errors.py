"""Errors a user can act on.

Every problem caused by input (a missing dataset folder, an unreadable image, a wrong config key, a
shape mismatch) is raised as :class:`UserError` with one line that names the file and the fix. The CLI
prints it as ``error: <message>`` and exits with status 2 — never a traceback from deep inside.
"""

from __future__ import annotations

import errno
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input, explained in one line (what, where, and how to fix it)."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        parts = [f"{path}: {message}" if path is not None else message]
        if fix:
            parts.append(f"fix: {fix}")
        super().__init__(" — ".join(parts).replace("\n", " "))

    def __reduce__(self):
        # rebuilt from the finished message and attributes, so that a UserError raised in a worker process
        # (DataLoader, process pool) crosses the pipe as itself, subclasses with extra arguments included
        return _rebuild_user_error, (type(self), str(self), self.__dict__)

    @classmethod
    def from_os_error(cls, exc: OSError, *, path: str | Path | None = None, fix: str | None = None) -> UserError:
        """The one line for a failed file-system operation: the path, the cause (permission, no space, …).

        ``path`` stands in when the error names no file; ``fix`` defaults to the usual remedy for the cause.
        """
        cause = exc.strerror or type(exc).__name__
        return cls(cause[:1].lower() + cause[1:], path=exc.filename or path, fix=fix or _OS_FIXES.get(exc.errno))


_OS_FIXES = {
    errno.ENOSPC: "free some space, or write somewhere else",
    errno.EDQUOT: "free some space, or write somewhere else",
    errno.EACCES: "check the permissions, or write somewhere else",
    errno.EPERM: "check the permissions, or write somewhere else",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.EBUSY: "the file is in use: close what holds it and retry",
}


def _rebuild_user_error(cls: type[UserError], message: str, attributes: dict) -> UserError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(attributes)
    return error


class NotBuiltError(UserError):
    """A command or option whose implementation has not landed yet."""
