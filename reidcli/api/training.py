"""Preparing datasets and training: `reid prepare`, `reid train`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reidcli.api.overrides import Overrides, as_overrides
from reidcli.recipe.options import AdaptOptions, PrepareOptions, SyntheticOptions, TrainOptions
from reidcli.reporting import Reporter
from reidcli.results import AdaptResult, PreparedDataset, TrainResult

if TYPE_CHECKING:
    from reidcli.recipe import Recipe

log = logging.getLogger(__name__)
SYNTHETIC_FIELDS = tuple(SyntheticOptions.model_fields)


def prepare(
    dataset: str, options: PrepareOptions | None = None, /, **fields: Any
) -> PreparedDataset:
    """Prepare a dataset into `options.out` (manifest.csv, dataset.json) and describe it.

    Args:
        dataset: market1501, dukemtmc, cuhk03-np-labeled, cuhk03-np-detected, msmt17, folder
            or synthetic.
        options: a `PrepareOptions`, or its fields as keyword arguments (`root`, `out`,
            `val_ids`, ...); the `synthetic` dataset's `ids`, `cams`, `images_per_id` and `size`
            may be given flat. See `reidcli.data.prepare.prepare`.
    """
    from reidcli.data.prepare import prepare as run_prepare

    if options is None:
        synthetic = {k: fields.pop(k) for k in SYNTHETIC_FIELDS if k in fields}
        fields = {**fields, "synthetic": synthetic} if synthetic else fields
    options = PrepareOptions.resolve(options, fields)
    document = run_prepare(dataset, options)
    out = options.out if options.out is not None else str(Path("data") / dataset)
    return PreparedDataset.from_document(document, out)


def train(
    recipe: Recipe | str | Path | None = None,
    out_dir: str | Path | None = None,
    options: TrainOptions | None = None,
    *,
    overrides: Overrides = (),
    reporter: Reporter | None = None,
    **fields: Any,
) -> TrainResult:
    """Train as the recipe describes, writing checkpoints and logs to a run folder.

    Under `torchrun --max-restarts N`, a restarted group (`TORCHELASTIC_RESTART_COUNT` > 0)
    continues the run folder from its `last.pt` as if `resume` were given.

    Args:
        recipe: a `Recipe`, a recipe file, or None with `resume` (the run's own recipe.yaml).
        out_dir: the run folder (`TrainOptions.out`); default `runs/<recipe name>-<date>-<time>`.
        options: a `TrainOptions` (`resume`, `resume_from`, `overwrite`, `device`), or its fields
            as keyword arguments.
        overrides: recipe values that win over the file (see `Overrides`).
        reporter: progress and messages (silent when None).

    Raises:
        RecipeError: an invalid recipe or override, or inconsistent resume arguments.
        OutputError, InUseError: the run folder cannot be written now (see `reidcli.outputs`).
        TrainingError, DatasetError, DeviceError: see `reidcli.engine.trainer.train`.
    """
    from reidcli.engine.trainer import start_training

    if out_dir is not None:
        fields["out"] = out_dir
    options = TrainOptions.resolve(options, fields)
    return start_training(recipe, options, as_overrides(overrides), reporter)


def adapt(
    recipe: Recipe | str | Path | None = None,
    out_dir: str | Path | None = None,
    options: AdaptOptions | None = None,
    *,
    overrides: Overrides = (),
    reporter: Reporter | None = None,
    **fields: Any,
) -> AdaptResult:
    """Adapt a trained model to new cameras from their unlabeled crops (the recipe's `adapt`).

    Writes a run folder as `train` does (recipe.yaml, env.json, metrics.jsonl with a `clusters`
    record per epoch, last.pt), which `evaluate`, `export` and `embed` take unchanged.

    Args:
        recipe: a `Recipe` with an `adapt` section, a recipe file, or None with `resume`.
        out_dir: the run folder (`AdaptOptions.out`); default `runs/<recipe name>-<date>-<time>`.
        options: an `AdaptOptions` (`resume`, `overwrite`, `device`), or its fields as keyword
            arguments.
        overrides: recipe values that win over the file (`adapt.source=RUN`, ...).
        reporter: progress and messages (silent when None).

    Raises:
        RecipeError: an invalid recipe, no adapt section, inconsistent resume arguments.
        CheckpointError: the source is missing or of another model or input size.
        DatasetError: the target crops are missing, empty or unreadable.
        TrainingError: the clustering finds no cluster (the message says which eps would help),
            a non-finite loss, a refused resume.
        OutputError, InUseError: the run folder cannot be written now.
    """
    from reidcli.engine.adapt import start_adaptation

    if out_dir is not None:
        fields["out"] = out_dir
    options = AdaptOptions.resolve(options, fields)
    return start_adaptation(recipe, options, as_overrides(overrides), reporter)
