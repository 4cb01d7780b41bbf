"""File locks for state that several runs on one home share.

``file_lock(path)`` takes an ``fcntl.flock`` on ``<path>.lock``, a sibling file that is never
removed: deleting a lock file while another process waits on it would let two holders in. The
kernel drops a flock when its holder dies (kill -9 included), so a crashed run never leaves a
stale lock behind. flock is advisory and local: every writer of the guarded file must take the
lock, and the home must not be on a network file system whose flock is a no-op.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lmchain.errors import LmchainError

DEFAULT_TIMEOUT_S = 120.0


class LockTimeout(LmchainError):
    """Another process held a lock for longer than the caller would wait."""


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _holder(lock: Path) -> str:
    try:
        text = lock.read_text().strip()
    except OSError:
        return "unknown"
    return text or "unknown"


@contextmanager
def file_lock(path: str | Path, timeout: float = DEFAULT_TIMEOUT_S, shared: bool = False) -> Iterator[Path]:
    """Hold an exclusive (or, with ``shared``, a shared) lock on ``path`` for the ``with`` block.

    Waits up to ``timeout`` seconds, then raises :class:`LockTimeout` naming the lock file and
    the process that holds it.
    """
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"could not lock {path} within {timeout:g}s: another lmchain run holds {lock} "
                        f"({_holder(lock)}); wait for it to finish and retry. The lock goes away by itself "
                        "when that process ends; do not delete the .lock file"
                    ) from None
                time.sleep(0.05)
        if not shared:  # who holds it, for the message of a process that times out waiting
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
        yield lock
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
