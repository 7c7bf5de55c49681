"""Preparing datasets and training: `reid prepare`, `reid train`."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from reidcli.api.overrides import Overrides, as_overrides
from reidcli.devices import check_device
from reidcli.errors import RecipeError
from reidcli.reporting import Reporter

if TYPE_CHECKING:
    from reidcli.engine.trainer import TrainResult
    from reidcli.recipe import Recipe

log = logging.getLogger(__name__)


def prepare(
    dataset: str,
    root: str | Path | None = None,
    out: str | Path | None = None,
    *,
    val_ids: int = 0,
    seed: int = 0,
    verify: bool = True,
    strict: bool = False,
    ids: int = 100,
    cams: int = 6,
    images_per_id: int = 8,
    size: tuple[int, int] = (128, 64),
    workers: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Prepare a dataset into `out` (manifest.csv, dataset.json) and return its description.

    `ids`, `cams`, `images_per_id` and `size` (height, width) shape the `synthetic` dataset,
    generated with `seed`. `out` must be new, empty, or a dataset `reid prepare` wrote, which
    `overwrite` replaces (only reid's files). See `reidcli.data.prepare.prepare`.
    """
    from reidcli.data.prepare import prepare as run_prepare
    from reidcli.data.synthetic import SyntheticSpec

    spec = SyntheticSpec(ids, cams, images_per_id, size[0], size[1], seed)
    return run_prepare(
        dataset, root, out, val_ids=val_ids, seed=seed, verify=verify, strict=strict,
        synthetic=spec, workers=workers, overwrite=overwrite,
    )  # fmt: skip


def train(
    recipe: Recipe | str | Path | None,
    out_dir: str | Path | None = None,
    *,
    overrides: Overrides = (),
    resume: bool = False,
    resume_from: str | Path | None = None,
    device: str = "auto",
    reporter: Reporter | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train as the recipe describes, writing checkpoints and logs to a run folder.

    Under `torchrun --max-restarts N`, a restarted group (`TORCHELASTIC_RESTART_COUNT` > 0)
    continues `out_dir` from its `last.pt` as if `resume` were given.

    Args:
        recipe: a `Recipe`, a recipe file, or None with `resume` (the run's own recipe.yaml).
        out_dir: the run folder; default `runs/<recipe name>-<date>-<time>`.
        overrides: recipe values that win over the file (see `Overrides`).
        resume: continue the run in `out_dir` from its `last.pt`.
        resume_from: continue from this checkpoint instead, writing to `out_dir`.
        device: auto, cpu or cuda.
        reporter: progress and messages (silent when None).
        overwrite: start over in an `out_dir` that holds a run (only reid's files there are
            removed); a folder with files reid did not write is always refused.

    Raises:
        RecipeError: an invalid recipe or override, or inconsistent resume arguments.
        OutputError, InUseError: `out_dir` cannot be written now (see `reidcli.outputs`).
        TrainingError, DatasetError, DeviceError: see `reidcli.engine.trainer.train`.
    """
    from reidcli.recipe import Recipe as RecipeModel
    from reidcli.recipe import load_recipe, override_recipe

    check_device(device)
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if restarts and not resume and resume_from is None and out_dir is not None:
        # torchrun --max-restarts restarted the group after a rank died: continue the run.
        resume = (Path(out_dir) / "last.pt").is_file()
        if resume:
            log.warning("torchrun restart %d: continuing %s from its last.pt", restarts, out_dir)
    if resume:
        if out_dir is None:
            raise RecipeError("resume continues a run folder: give it (--out RUN_DIR)")
        if resume_from is not None:
            raise RecipeError("use either resume (RUN_DIR/last.pt) or resume_from (a checkpoint)")
        resume_from = Path(out_dir) / "last.pt"
        if not resume_from.is_file():
            raise RecipeError(f"resume: {resume_from} does not exist")
        recipe = recipe if recipe is not None else Path(out_dir) / "recipe.yaml"
    if recipe is None:
        raise RecipeError("missing recipe: reid train RECIPE [--out RUN_DIR]")
    if isinstance(recipe, RecipeModel):
        resolved = override_recipe(recipe, as_overrides(overrides))
        name = recipe.model.name
    else:
        resolved = load_recipe(recipe, as_overrides(overrides))
        name = Path(recipe).stem
    if out_dir is None:
        out_dir = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    from reidcli.engine.trainer import train as run_training

    return run_training(
        resolved, out_dir, resume_from=resume_from, device=device, reporter=reporter,
        overwrite=overwrite,
    )  # fmt: skip
