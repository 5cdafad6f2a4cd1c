"""One process at a time per run folder: an exclusive lock on ``RUN_DIR/.lock``.

Two ``adaptseg train`` runs into one ``--out`` would interleave checkpoints and logs, and the second
would take the first one's live stage for an interrupted one. The lock is ``fcntl.flock`` on the lock
file, which the kernel releases when its holder exits or dies (even by SIGKILL): a lock file left by a
dead process never blocks. The holder writes its pid, host and start time into the file, so that a run
that is refused can say who holds the folder; when the file system cannot ``flock`` (some network
mounts), those details decide instead: the folder is taken unless the recorded process still runs on
this host.

A lock taken with ``flock`` belongs to the open file, which a forked child (a data-loading worker)
shares: the child would keep the folder locked after its parent was killed, until it noticed and exited.
Forked children therefore close their copy of every held lock at once (``os.register_at_fork``);
``exec``'d children never get one (Python opens files non-inheritable).

Limit: ``flock`` is per host on network file systems that do not forward it, so two hosts writing one
shared run folder are not kept apart.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from adaptseg.errors import UserError

LOCK_NAME = ".lock"
#: the lock files this process holds (their descriptors), closed in forked children
_HELD: set[int] = set()
#: what ``flock`` answers on a file system that does not support it
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def _close_held_in_child() -> None:
    """After ``fork``, in the child: let go of the parent's locks (the parent still holds them)."""
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def _holder(fd: int) -> dict:
    """The pid/host/start details the holder wrote ({} while it is still writing them, or unreadable)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        holder = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if "pid" not in holder:
        return "another process"
    since = f", since {holder['started']}" if holder.get("started") else ""
    return (
        f"pid {holder['pid']} on host {holder.get('host', '?')} ({holder.get('command', 'adaptseg')}{since})"
    )


def _alive_here(holder: dict) -> bool:
    """True when ``holder`` names a process that still runs on this host."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    if holder["pid"] == os.getpid():
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _refuse(run_dir: Path, holder: dict) -> UserError:
    return UserError(
        f"this run folder is in use by {_describe(holder)}",
        path=run_dir,
        fix="wait for that run to finish (or stop it), or pass another --out",
    )


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path, command: str = "adaptseg train") -> Iterator[Path]:
    """Hold ``run_dir`` (created if needed) for the block; a :class:`UserError` names the holder if taken."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError("is a file, not a run folder", path=run_dir, fix="pass --out a folder")
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise UserError.from_os_error(exc, path=run_dir, fix="pass --out a folder you can write to") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refuse(run_dir, _holder(fd)) from None
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise UserError.from_os_error(exc, path=path) from None
            if _alive_here(_holder(fd)):
                raise _refuse(run_dir, _holder(fd)) from None
        details = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "argv": sys.argv,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(details) + "\n").encode("utf-8"), 0)
        _HELD.add(fd)
        try:
            yield path
        finally:
            _HELD.discard(fd)
            os.ftruncate(fd, 0)  # the details leave with the holder
    finally:
        os.close(fd)  # releases the flock
