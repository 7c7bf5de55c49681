"""Freed memory kept for the next batch: large allocations stop costing page faults."""

import json
import os
import subprocess
import sys

import pytest

from reidcli import allocator
from tests.conftest import reid_process

SCRIPT = r"""
import json, os, sys
import numpy as np
from reidcli import allocator
if sys.argv[1] == "retain":
    assert allocator.retain_freed_memory()


def resident() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


block = np.ones(64 << 18, dtype=np.float32)  # 64 MiB, every page written
held = resident()
del block
print(json.dumps({"released": held - resident(), "allocator": allocator.current()}))
"""


def released(setting: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, setting], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(
    allocator._glibc() is None or not os.path.exists("/proc/self/statm"), reason="glibc, Linux"
)
def test_freed_memory_is_kept_for_the_next_batch():
    plain, kept = released("system"), released("retain")
    assert (plain["allocator"], kept["allocator"]) == ("system", "retain")
    # glibc unmaps a freed 64 MiB block at once: the next batch maps and faults it in again
    assert plain["released"] > 48 << 20
    # kept: the block stays in the process for the next allocation
    assert kept["released"] < 8 << 20


def test_bad_setting_is_a_usage_error():
    env = {**os.environ, "REID_MALLOC": "jemalloc"}
    done = reid_process("--version", env=env)
    assert done.returncode == 2 and "REID_MALLOC='jemalloc'" in done.stderr
    assert reid_process("--version", env={**os.environ, "REID_MALLOC": "system"}).returncode == 0
