"""Shared fixtures and helpers. Tests run on CPU, offline, on synthetic data."""

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"  # real Market-1501 images, when present beside the checkout
# Small fixtures kept in the repository: reference outputs of the public metric and re-ranking
# implementations (tests/data/golden) and state-dict layouts of reference models
# (tests/data/reference).
GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
REFERENCE = Path(__file__).resolve().parent / "data" / "reference"

os.environ.setdefault("OMP_NUM_THREADS", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers side by side: one thread each, so that they do not fight
    # over the two cores (torch's threads spin while they wait). Subprocesses inherit it.
    os.environ["OMP_NUM_THREADS"] = "1"
# The suite is the CPU suite on every machine: `device: auto` would otherwise pick a GPU where
# there is one (and torchrun's second rank a GPU that a one-GPU machine lacks). Subprocesses
# inherit this. `REID_TEST_CUDA=1` keeps the GPUs visible; `benchmarks/gpu_check.sh` runs the
# CUDA checks.
if os.environ.get("REID_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


def reid(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run the `reid` command's entry point in this process (in `cwd`), capturing its output.

    The same code as the console script, without a new interpreter importing torch each time
    (seconds per call); `reid_process` runs a real subprocess where the process itself matters
    (signals, imports, torchrun).
    """
    import torch

    from reidcli.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, here = sys.argv, os.getcwd()
    # What a run sets for the whole process (`Runtime.from_env`), put back for the next test.
    kernels = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
               torch.backends.cudnn.benchmark, torch.get_num_threads())  # fmt: skip
    sys.argv = ["reid", *args]
    code = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as done:
                if isinstance(done.code, str):  # sys.exit("message"): printed, exit 1
                    print(done.code, file=sys.stderr)
                code = done.code if isinstance(done.code, int) else int(done.code is not None)
    finally:
        os.chdir(here)
        sys.argv = argv
        torch.use_deterministic_algorithms(kernels[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = kernels[1:3]
        torch.set_num_threads(kernels[3])
    return subprocess.CompletedProcess(["reid", *args], code, out.getvalue(), err.getvalue())


def reid_process(*args: str, cwd: Path = ROOT, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m reidcli ARGS` as a real subprocess, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", "reidcli", *args], capture_output=True, text=True, cwd=cwd, **kwargs
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The synthetic dataset of the `reid train` tests (tests/train_support.py): 100 identities,
    3 cameras, 8 crops each at 64x32, 10 validation identities."""
    out = tmp_path_factory.mktemp("synthetic")
    done = reid(
        "prepare", "synthetic", "--out", str(out), "--ids", "100", "--cams", "3",
        "--images-per-id", "8", "--size", "64x32", "--val-ids", "10", "--seed", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


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
    """The reference re-ranking inputs and outputs (`tests/data/golden/rerank_golden.npz`).

    The plain euclidean q-g, q-q and g-g distances the reference took as input are recomputed
    from the features (in float64) instead of being stored: 15 MB less in the repository.
    """
    golden = dict(np.load(GOLDEN / "rerank_golden.npz"))
    q = golden["query_features"].astype(np.float64)
    g = golden["gallery_features"].astype(np.float64)
    for key, (a, b) in {"q_g_dist": (q, g), "q_q_dist": (q, q), "g_g_dist": (g, g)}.items():
        golden[key] = euclidean(a, b).astype(np.float32)
    return golden


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain (not squared) euclidean distances between the rows of `a` and `b`."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(sq, 0, None))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny inputs run faster on one thread, and do not fight other jobs for the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The modules that take longest start first, so that `make test`'s two workers (pytest-xdist,
# one module at a time) finish together instead of one waiting for the other's last module.
LONGEST_FIRST = (
    "test_train.py",
    "test_train_distributed.py",
    "test_train_faults.py",
    "test_adapt.py",
    "test_export.py",
    "test_int8.py",
    "test_bench.py",
    "test_embed.py",
    "test_hostile.py",
    "test_runner_choice.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
