"""Write a folder atomically: build it under a temporary name beside the destination, then rename it.

A crash or an error while the folder is being built leaves the destination untouched (no partial
artifact, and an existing one survives a failed ``--force`` re-export). Replacing an existing folder
takes two renames (old → backup, new → destination) and then deletes the backup.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from adaptseg.errors import UserError


def check_writable(dest: Path, force: bool) -> None:
    """Refuse to overwrite ``dest`` unless ``force`` (one-line error naming the fix)."""
    if dest.exists() and not force:
        raise UserError("already exists", path=dest, fix="pass --force to overwrite it, or choose another --out")
    if dest.exists() and not dest.is_dir():
        raise UserError("exists and is not a folder", path=dest, fix="an artifact is a folder: choose another --out")


@contextlib.contextmanager
def staged_folder(dest: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``dest``; on success it becomes ``dest``.

    On any exception the temporary folder is removed and ``dest`` is left as it was.
    """
    dest = Path(dest)
    check_writable(dest, force)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield stage
        check_writable(dest, force)  # something may have appeared meanwhile
        backup = None
        if dest.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, backup / dest.name)
        os.replace(stage, dest)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
