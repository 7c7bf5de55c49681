"""What the `reid train` test modules share: the tiny recipe, its synthetic dataset, helpers."""

import json
import os
import sys
import time
from pathlib import Path

import torch
import yaml

from reidcli.engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


TINY = {
    "data": {
        "dataset": "synthetic",
        "height": 64,
        "width": 32,
        "p": 4,
        "k": 4,
        "workers": 0,
        "eval_batch_size": 64,
        "augment": {"erasing": {"p": 0.3}},
    },
    "model": {"name": "osnet_x0_25", "pretrained": "none"},
    "loss": [{"name": "cross_entropy"}, {"name": "triplet", "margin": 0.3}],
    "optim": {"name": "adam", "lr": 0.003},
    "schedule": {"name": "warmup_cosine", "warmup_epochs": 0},
    "train": {"epochs": 3, "seed": 0, "deterministic": True, "eval_every": 1, "log_every": 2},
    "eval": {"flip": False, "normalize": "whole"},
}


def write_recipe(folder: Path, dataset: Path, **changes) -> Path:
    raw = json.loads(json.dumps(TINY))
    raw["data"]["root"] = str(dataset)
    return save_recipe(folder / "recipe.yaml", raw, changes)


def save_recipe(path: Path, raw: dict, changes: dict) -> Path:
    """Write `raw` with `changes` applied (keys `section__field`, nested as deep as needed)."""
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path.write_text(yaml.safe_dump(raw))
    return path


def final_weights(run: Path) -> dict:
    return load_checkpoint(run / "last.pt")["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, restarts: int = 0) -> list[str]:
    """`reid train ARGS` under torchrun: two processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2", "--max-restarts", str(restarts), "-m", "reidcli", "train", *args]  # fmt: skip


def wait_for(predicate, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError
        time.sleep(0.02)


def epoch_logged(run: Path, epoch: int):
    def check() -> bool:
        path = run / "metrics.jsonl"
        if not path.exists():
            return False
        lines = path.read_text().splitlines()
        return any(json.loads(x)["kind"] == "epoch" and json.loads(x)["epoch"] == epoch
                   for x in lines if x.endswith("}"))  # fmt: skip

    return check


def metric_lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0
