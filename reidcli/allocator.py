"""Keep freed memory in the process for the next batch (glibc), instead of returning it.

A CPU forward pass of a re-ID model allocates activations of tens to hundreds of megabytes.
glibc's malloc serves each allocation of 32 MiB or more with a fresh `mmap` and gives it back with
`munmap` when freed, so every batch maps, zero-fills page by page and unmaps the same memory
again: on two cores an LMBN_n batch of 16 spent more time in the kernel (page faults) than in its
own arithmetic. With `retain`, large blocks come from the heap and freed memory stays there for
the next batch, which is what ONNX Runtime's arena does; the cost is that the process keeps its
peak memory until it exits. `reid` applies it at start; Python users call `retain_freed_memory()`
themselves (a library does not change its host process's allocator on import).

`REID_MALLOC=system` leaves glibc's defaults (the setting is reported by `reid bench`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV = "REID_MALLOC"
CHOICES = ("retain", "system")
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Free memory above this at the top of the heap is returned to the system (a ceiling on what is
# kept after a peak that will not come again, such as a model load).
_TRIM_THRESHOLD = 1 << 30
# glibc's own defaults, restored by `restore_defaults`.
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024

_state = {"allocator": "system"}


def requested() -> str:
    """The allocator setting `REID_MALLOC` asks for (default: retain).

    Raises:
        ValueError: REID_MALLOC names neither retain nor system.
    """
    value = os.environ.get(ENV, "retain").strip().lower() or "retain"
    if value not in CHOICES:
        raise ValueError(f"{ENV}={value!r}: choose one of {', '.join(CHOICES)}")
    return value


def retain_freed_memory() -> bool:
    """Serve large allocations from the heap and keep freed memory (glibc only).

    Call it first in a process. It does not go with OpenVINO: in a process where both ran,
    glibc's heap was seen corrupted (a crash in `realloc` later on), so a process that imported
    `openvino` keeps glibc's defaults, and `reidcli.export.openvino` restores them
    (`restore_defaults`) before it loads OpenVINO.

    Returns:
        Whether the setting took effect (False on a C library other than glibc, or after
        OpenVINO was loaded).
    """
    if current() == "retain":
        return True
    if "openvino" in sys.modules:
        return False
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    if ok:
        _state["allocator"] = "retain"
    return ok


def restore_defaults() -> None:
    """Give glibc its default settings back (before OpenVINO is loaded: see
    `retain_freed_memory`); nothing when they were never changed."""
    libc = _glibc() if current() == "retain" else None
    if libc is not None:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        _state["allocator"] = "system"


def apply_requested() -> str:
    """Apply what `REID_MALLOC` asks for; returns the setting in effect (see `current`)."""
    if requested() == "retain":
        retain_freed_memory()
    return current()


def current() -> str:
    """`retain` once `retain_freed_memory` took effect in this process, else `system`."""
    return _state["allocator"]


def _glibc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc
    except (OSError, AttributeError):
        return None
    return libc
