"""The run folder of `reid train`: claimed and locked for one writer, what it holds recorded, and
its log put back to the checkpoint a run resumes from."""

import contextlib
import json
import logging
from pathlib import Path

from reidcli.engine.runtime import Runtime
from reidcli.outputs import OutputFolder, remove_stale_temporaries, write_text_atomic

log = logging.getLogger(__name__)

# What `reid train` writes into a run folder (epoch_NNN.pt as well); what an earlier reid wrote
# there before run folders carried a record.
RUN_FILES = ("recipe.yaml", "env.json", "metrics.jsonl", "last.pt", "best.pt")
EARLIER_RUN_FILES = (*RUN_FILES, "epoch_*.pt", "eval*.json")
LOG_FOLDERS = ("tensorboard", "wandb")  # written by those libraries; recorded at each checkpoint
RUN_HINT = (
    "continue it with --resume, or pass --overwrite to start over (only the files reid wrote "
    "there are removed)"
)


@contextlib.contextmanager
def run_folder(run_dir: Path, runtime: Runtime, resuming: bool, overwrite: bool):
    """The run folder, claimed and locked by the main rank (the only one that writes it)."""
    if not runtime.is_main:
        yield None
        return
    with OutputFolder.open(
        run_dir, "run", overwrite=overwrite, keep=resuming, adopt=EARLIER_RUN_FILES,
        hint=RUN_HINT,
    ) as folder:  # fmt: skip
        folder.clear_previous()  # --overwrite: the old run's files go before the new run starts
        names = [*RUN_FILES, *(p.name for p in run_dir.glob("epoch_*.pt"))]
        for stale in remove_stale_temporaries(run_dir, names):
            log.warning("removed %s, left by a write that was killed", stale.name)
        folder.own(*RUN_FILES)
        yield folder


def trim_metrics(path: Path, step: int, epoch: int) -> int:
    """Drop the records of `metrics.jsonl` written after the checkpoint a run resumes from.

    A record belongs to the resumed state when its step is earlier, or equal with its epoch
    not beyond the checkpoint's (a kill between an epoch's record and its checkpoint leaves an
    epoch record at the checkpoint's step + the epoch's steps). `reid adapt`'s clusters record
    carries the 1-based number of the epoch it starts, so the one of an epoch not yet trained at
    the checkpoint goes and is written again. A torn last line is dropped.

    Returns:
        The number of records dropped.
    """
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            keep = record["step"] < step or (
                record["step"] == step and record.get("epoch", 0) <= epoch
                if record.get("kind") in ("epoch", "val", "clusters")
                else record["step"] <= step
            )
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_text_atomic(path, "".join(line + "\n" for line in kept))
    return dropped
