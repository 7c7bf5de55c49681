"""Shared fixtures and helpers. Tests run on CPU, offline, on synthetic data."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

os.environ.setdefault("OMP_NUM_THREADS", "2")


def reid(*args: str, cwd: Path = ROOT, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m reidcli ARGS` as a real subprocess, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", "reidcli", *args], capture_output=True, text=True, cwd=cwd, **kwargs
    )


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present beside the checkout")
    return SHARED


@pytest.fixture(scope="module")
def rerank_golden() -> dict:
    """The reference re-ranking inputs and outputs (`../shared/golden/rerank_golden.npz`)."""
    path = SHARED / "golden" / "rerank_golden.npz"
    if not path.is_file():
        pytest.skip("golden files not present")
    return dict(np.load(path))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny inputs run faster on one thread, and do not fight other jobs for the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
