"""One writer at a time: an OS file lock (the `filelock` package) plus a note of who holds it.

The lock is the kernel's (flock): it is released when its process ends, however it ends, so a
process killed with SIGKILL leaves nothing to clean up (the stale-lock rule: a lock is only ever
held by a live process). The `.owner` note beside it only serves the refusal message.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


class Busy(RuntimeError):
    """Another live process holds the lock."""


def _owner_note(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".owner")


@contextmanager
def exclusive(lock_path: str | os.PathLike, what: str, group: str | None = None):
    """Hold `lock_path` for the block, or raise Busy at once naming the process that holds it.

    group: what this process belongs to (e.g. the `reproduce` run whose notebook it serves). A lock held by a
    process of the same group is waited for instead: two notebooks of one run that share a job run compute it
    once, the second one serves the result the first wrote."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        owner = _owner(lock_path)
        if group and owner.get("group") == group:
            lock.acquire(timeout=-1)
        else:
            who = (f"process {owner['pid']} on {owner['host']}, started {owner['started']}: {' '.join(owner['argv'])}"
                   if owner else "another process")
            raise Busy(f"{what} is in use by {who}.\n  Wait for it to finish, or stop it; a run that died releases "
                       f"its lock by itself (nothing to delete). Lock: {lock_path}") from None
    note = _owner_note(lock_path)
    try:
        note.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "group": group,
                                    "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv}))
        yield
    finally:
        note.unlink(missing_ok=True)
        lock.release()


def _owner(lock_path: Path, patience_s: float = 2.0) -> dict:
    """The holder's note ({} when unreadable); a holder that has just taken the lock writes it a moment later."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            owner = json.loads(_owner_note(lock_path).read_text())
            if {"pid", "host", "started", "argv"} <= set(owner):
                return owner
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            return {}
        time.sleep(0.05)
