"""One writer at a time: an exclusive lock file beside (or inside) what a verb changes in place.

The lock is `flock` on a small file that also names its holder (pid, host, command, start
time), so a second writer is told who holds it. The kernel releases a lock when its process
dies (also by SIGKILL); the holder's record stays in the file, so the next writer knows that the
previous one ended without releasing it and says so when it takes over. A clean release empties
the file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reidcli.errors import InUseError, OutputError

log = logging.getLogger(__name__)


def holder_record() -> dict:
    """Who is writing: this process."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _describe(record: dict) -> str:
    if not record:
        return "another process"
    host = record.get("host")
    where = f" on {host}" if host not in (None, socket.gethostname()) else ""
    command, since = record.get("command", "?"), record.get("since")
    return f"pid {record.get('pid')}{where} ({command}, since {since})"


def _read_record(handle) -> dict:
    handle.seek(0)
    text = handle.read()
    try:
        record = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {"command": "unknown (unreadable lock record)"}
    return record if isinstance(record, dict) else {}


@contextmanager
def exclusive(lock_path: str | Path, what: str, *, wait: bool = False) -> Iterator[None]:
    """Hold the lock at `lock_path` while the block runs.

    Args:
        lock_path: the lock file (created when missing).
        what: what the lock protects, for messages ("run folder runs/x").
        wait: wait for the holder to finish (gallery writers take turns) instead of refusing.

    Raises:
        InUseError: another process holds the lock and `wait` is False.
        OutputError: the lock path is a folder, or cannot be created.
    """
    lock_path = Path(lock_path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a+", encoding="utf-8")
    except IsADirectoryError:
        raise OutputError(
            f"{lock_path}: is a folder, but reid keeps the lock of {what} there; remove it"
        ) from None
    except OSError as err:
        raise OutputError(
            f"{lock_path}: cannot create the lock of {what} ({err.strerror})"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_record(handle))
            if not wait:
                raise InUseError(
                    f"{what} is being written by {holder}; wait for it to finish (one writer "
                    "at a time)"
                ) from None
            log.warning("%s is being written by %s: waiting for it", what, holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        previous = _read_record(handle)
        if previous.get("pid") is not None:
            log.warning(
                "%s: the previous writer, %s, ended without releasing its lock (killed?); "
                "taking it over",
                what,
                _describe(previous),
            )
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder_record()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
