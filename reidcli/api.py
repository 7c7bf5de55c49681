"""One function per verb, with typed arguments; the CLI is a thin skin over these.

Importing this module does not import torch; each verb imports what it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reidcli.engine.trainer import TrainResult
    from reidcli.recipe import Recipe


def train(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    resume_from: str | Path | None = None,
    device: str = "auto",
) -> TrainResult:
    """Train as the recipe describes, writing checkpoints and logs to `out_dir`.

    See `reidcli.engine.trainer.train`.
    """
    from reidcli.engine.trainer import train as run_training

    return run_training(recipe, out_dir, resume_from=resume_from, device=device)
