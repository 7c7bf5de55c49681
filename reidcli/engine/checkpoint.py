"""Checkpoints: plain versioned dicts, written atomically, loadable with weights_only=True."""

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from reidcli.errors import CheckpointError, ReidError, TrainingError
from reidcli.models.weights import load_torch_file
from reidcli.recipe import Recipe

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("version", "model", "recipe", "num_classes", "epoch", "step")
# Recipe keys that may change when a run is resumed: they do not affect the computation.
RESUMABLE_CHANGES = (
    "train.eval_every",
    "train.log_every",
    "train.checkpoint",
    "train.tensorboard",
    "train.wandb",
    "data.workers",
    "data.eval_batch_size",
    "data.root",
    "data.manifest",
    "eval",
    "export",
    "bench",
)


def find_checkpoint(target: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """The checkpoint to evaluate.

    Args:
        target: a run folder (its best.pt, else last.pt), a checkpoint file, or None for the
            most recently written run under `runs_dir`.

    Raises:
        ReidError: nothing to evaluate there.
    """
    if target is None:
        runs = Path(runs_dir)
        candidates = [p for p in runs.glob("*/last.pt")] if runs.is_dir() else []
        if not candidates:
            raise ReidError(f"no run found under {runs}/; give a run folder or checkpoint")
        target = max(candidates, key=lambda p: p.stat().st_mtime).parent
        log.warning("evaluating the newest run: %s", target)
    target = Path(target)
    if target.is_dir():
        for name in ("best.pt", "last.pt"):
            if (target / name).is_file():
                return target / name
        raise CheckpointError(f"{target}: no best.pt or last.pt in this folder")
    if not target.is_file():
        raise CheckpointError(f"{target}: no such run folder or checkpoint")
    return target


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` so that a reader sees either the old file or the new one.

    The bytes go to a temporary file in the same folder, are flushed to disk, then renamed over
    `path`. A failed write (disk full, killed process) leaves the previous checkpoint intact.

    Raises:
        CheckpointError: the write failed; the previous file at `path` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"version": CHECKPOINT_VERSION, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(
                f"{path}: checkpoint write failed ({err}); kept the old one"
            ) from err
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` onto the CPU.

    Raises:
        CheckpointError: missing, unreadable, not a reid checkpoint, or a newer version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    state = load_torch_file(path)
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
        raise CheckpointError(f"{path}: not a reid training checkpoint (missing {missing})")
    if state["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state['version']} is newer than this reid supports"
        )
    return state


def saved_recipe(state: dict, path: str | Path) -> dict:
    """The recipe a checkpoint carries, as a dict.

    Raises:
        CheckpointError: the recipe is not valid JSON of a mapping (a damaged checkpoint).
    """
    try:
        recipe = json.loads(state["recipe"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the checkpoint's recipe is damaged ({err})") from None
    if not isinstance(recipe, dict):
        raise CheckpointError(f"{path}: the checkpoint's recipe is not a mapping")
    return recipe


def check_resume_recipe(saved: dict, recipe: Recipe) -> None:
    """Refuse to resume when a recipe value that changes the computation differs.

    Raises:
        TrainingError: listing every differing field with its old and new value.
    """
    differing = [
        f"{path}: {old!r} -> {new!r}"
        for path, old, new in _diff(saved, recipe.to_dict())
        if not any(path == key or path.startswith(key + ".") for key in RESUMABLE_CHANGES)
    ]
    if differing:
        raise TrainingError(
            "cannot resume: the recipe differs from the checkpoint's in\n  "
            + "\n  ".join(differing)
        )


def _diff(old, new, prefix: str = ""):
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            yield from _diff(old.get(key), new.get(key), path)
    elif old != new:
        yield prefix, old, new
