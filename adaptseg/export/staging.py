"""Write an artifact folder atomically: build it under a temporary name beside the destination, then rename it.

A crash or an error while the folder is being built leaves the destination untouched (no partial
artifact, and an existing one survives a failed ``--force`` re-export). Replacing an existing artifact
takes two renames (old → backup, new → destination) and then deletes the backup.

What may be replaced: only an adaptseg artifact (a folder holding its ``model.json`` and the files it
lists) or an empty folder, and never the working directory or a folder above it — ``--force`` must not
destroy anything of the user's. Temporary folders carry the exporting process's pid
(``.<name>.<pid>-<random>.tmp``/``.old``): a later export into the same parent removes those of dead
processes (a SIGKILLed export) and restores an artifact a dead process had moved aside, and never touches
a live one. Folders are created with the permissions the umask gives, like ``mkdir``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from adaptseg.artifact.folder import is_artifact_folder
from adaptseg.artifact.meta import SIDECAR
from adaptseg.errors import UserError

#: ``.<name>.<pid>-<token>.tmp`` (a folder being built) or ``.old`` (an artifact being replaced)
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]+\.(?P<kind>tmp|old)$")


def check_writable(dest: Path, force: bool) -> None:
    """Refuse a destination export must not replace (one-line error naming the fix)."""
    dest = _absolute(dest)
    if not dest.exists():
        return
    if not dest.is_dir():
        raise UserError(
            "exists and is not a folder", path=dest, fix="an artifact is a folder: choose another --out"
        )
    cwd = Path.cwd()
    if dest == cwd or dest in cwd.parents:
        raise UserError(
            "is the working directory (or holds it): export writes a new folder and cannot replace this one",
            path=dest,
            fix="pass --out a new folder, e.g. --out ./model",
        )
    empty = not any(dest.iterdir())
    if not (empty or is_artifact_folder(dest)):
        raise UserError(
            f"exists and is not an adaptseg artifact (a folder with its {SIDECAR} and the files it lists); "
            "export never replaces other files",
            path=dest,
            fix="choose another --out",
        )
    if not force:
        raise UserError(
            "already exists", path=dest, fix="pass --force to replace this artifact, or choose another --out"
        )


@contextlib.contextmanager
def staged_folder(dest: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``dest``; on success it becomes ``dest``.

    On any exception the temporary folder is removed and ``dest`` is left as it was. A file-system
    error (no space, permission) becomes one line naming the path and the cause.
    """
    dest = _absolute(Path(dest))
    check_writable(dest, force)
    stage = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(dest.parent)
        stage = _make_temporary(dest, "tmp")
        yield stage
        check_writable(dest, force)  # something may have appeared meanwhile
        backup = None
        if dest.exists():
            backup = _make_temporary(dest, "old")
            os.replace(dest, backup / dest.name)
        os.replace(stage, dest)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except OSError as exc:
        raise write_error(exc, dest) from None
    finally:
        if stage is not None and stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def write_error(exc: OSError, dest: Path) -> UserError:
    """The one line for a failed write of the artifact at ``dest``: the path and the cause."""
    cause = (exc.strerror or str(exc) or type(exc).__name__).lower()
    fix = "choose another --out"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space on that disk, or pass --out on another one"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable, or pass --out somewhere you can write"
    return UserError(f"cannot write the artifact: {cause}", path=exc.filename or dest, fix=fix)


def remove_stale_temporaries(parent: Path) -> list[Path]:
    """Remove the temporary folders of exports into ``parent`` whose process is dead; returns them.

    A dead export's backup (``.old``) of an artifact it was replacing is put back when the artifact's
    own name is free (it died between the two renames), else removed.
    """
    removed = []
    for entry in parent.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match is None or not entry.is_dir() or process_alive(int(match["pid"])):
            continue
        original = parent / match["name"]
        kept = entry / match["name"]
        if match["kind"] == "old" and kept.is_dir() and not original.exists():
            os.replace(kept, original)
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` runs on this machine (one of another user counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_temporary(dest: Path, kind: str) -> Path:
    """A new folder ``.<name>.<pid>-<token>.<kind>`` beside ``dest`` with the umask's permissions."""
    folder = dest.parent / f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.{kind}"
    folder.mkdir(mode=0o777)  # the umask applies, as for mkdir(1)
    return folder


def _absolute(path: Path) -> Path:
    """``path`` made absolute with ``.``/``..`` resolved (so ``--out .`` names the working directory)."""
    return Path(os.path.abspath(path.expanduser()))
