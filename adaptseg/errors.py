"""Errors a user can act on.

Every problem caused by input (a missing dataset folder, an unreadable image, a wrong config key, a
shape mismatch) is raised as :class:`UserError` with one line that names the file and the fix. The CLI
prints it as ``error: <message>`` and exits with status 2 — never a traceback from deep inside.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
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
    def from_os_error(
        cls, exc: OSError, *, path: str | Path | None = None, fix: str | None = None
    ) -> UserError:
        """An :class:`OSError` as the one-line error: the path, the cause (``strerror``) and what to do.

        ``path``, when given, names the file the user knows (the error itself may name a temporary file,
        or none: a ``write`` on a full disk names none); ``fix`` replaces the usual remedy for the cause.
        """
        where = path if path is not None else exc.filename
        if path is None and exc.filename2 is not None:
            where = f"{where} -> {exc.filename2}"
        cause = exc.strerror or str(exc) or type(exc).__name__
        if fix is None and exc.errno is not None:
            fix = _OS_FIXES.get(exc.errno, "check the path and try again")
        return cls(cause, path=where, fix=fix)


#: what to do about a file-system error, by errno
_OS_FIXES: dict[int, str] = {
    errno.EACCES: "check the permissions, or write somewhere else",
    errno.EPERM: "check the permissions, or write somewhere else",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.ENOSPC: "free some disk space, or write somewhere else",
    errno.EDQUOT: "free some space within your disk quota, or write somewhere else",
    errno.EBUSY: "close what holds it (another process, a mount) and try again",
    errno.ENOTDIR: "a part of this path is a file, not a folder: choose another path",
    errno.EISDIR: "this is a folder: name a file",
    errno.ENOENT: "check the path",
    errno.EEXIST: "something is already there: choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EMFILE: "raise the open-file limit (ulimit -n) and try again",
}


def _rebuild_user_error(cls: type[UserError], message: str, attributes: dict) -> UserError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(attributes)
    return error


@contextlib.contextmanager
def os_errors_as_user_errors(path: str | Path) -> Iterator[None]:
    """Re-raise an :class:`OSError` from the block as a :class:`UserError` naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise UserError.from_os_error(exc, path=path) from None
