"""One function per verb, with typed arguments; the CLI is a thin skin over these.

Importing this module does not import torch; each verb imports what it needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reidcli.devices import check_device
from reidcli.errors import RecipeError
from reidcli.reporting import Reporter

if TYPE_CHECKING:
    from reidcli.engine.trainer import TrainResult
    from reidcli.recipe import Recipe

# Recipe overrides: `KEY=VALUE` strings as `--set` takes them, or a {dotted key: value} mapping.
Overrides = Sequence[str] | Mapping[str, Any]


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
) -> dict:
    """Prepare a dataset into `out` (manifest.csv, dataset.json) and return its description.

    `ids`, `cams`, `images_per_id` and `size` (height, width) shape the `synthetic` dataset,
    generated with `seed`. See `reidcli.data.prepare.prepare`.
    """
    from reidcli.data.prepare import prepare as run_prepare
    from reidcli.data.synthetic import SyntheticSpec

    spec = SyntheticSpec(ids, cams, images_per_id, size[0], size[1], seed)
    return run_prepare(
        dataset, root, out, val_ids=val_ids, seed=seed, verify=verify, strict=strict,
        synthetic=spec, workers=workers,
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
) -> TrainResult:
    """Train as the recipe describes, writing checkpoints and logs to a run folder.

    Args:
        recipe: a `Recipe`, a recipe file, or None with `resume` (the run's own recipe.yaml).
        out_dir: the run folder; default `runs/<recipe name>-<date>-<time>`.
        overrides: recipe values that win over the file (see `Overrides`).
        resume: continue the run in `out_dir` from its `last.pt`.
        resume_from: continue from this checkpoint instead, writing to `out_dir`.
        device: auto, cpu or cuda.
        reporter: progress and messages (silent when None).

    Raises:
        RecipeError: an invalid recipe or override, or inconsistent resume arguments.
        TrainingError, DatasetError, DeviceError: see `reidcli.engine.trainer.train`.
    """
    from reidcli.recipe import Recipe as RecipeModel
    from reidcli.recipe import load_recipe, override_recipe

    check_device(device)
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
        resolved, out_dir, resume_from=resume_from, device=device, reporter=reporter
    )


def evaluate(
    target: str | Path | None = None,
    *,
    features: str | Path | None = None,
    recipe: str | Path | None = None,
    overrides: Overrides = (),
    split: str = "test",
    save_features: str | Path | None = None,
    visualize: int = 0,
    visualize_dir: str | Path | None = None,
    device: str = "auto",
    runs_dir: str | Path = "runs",
    reporter: Reporter | None = None,
) -> dict:
    """Evaluate a trained model on a prepared dataset, or saved features without a model.

    Every evaluation option lives in the recipe's `eval` section (distance, ranks, protocol,
    flip, rerank, query_expansion, seed): the run's recipe for a model, the schema defaults (or
    `recipe`) for a features file, then `overrides`, e.g. `{"eval.rerank.enabled": True}`.
    `data.*` overrides evaluate a run on another prepared dataset (cross-domain); `model.*`
    cannot change.

    Args:
        target: a run folder (its best.pt, else last.pt), a checkpoint, or None for the newest
            run under `runs_dir`. Not with `features`.
        features: a features `.npz` file to score instead of running a model.
        recipe: the recipe of a weights file that carries none (a LightMBN checkpoint); with
            `features`, the recipe whose `eval` section applies.
        overrides: recipe values that win (see `Overrides`).
        split: "test" (query/gallery) or "val" (the validation identities).
        save_features: write the extracted features (with image paths) to this `.npz`.
        visualize: write ranked lists of that many worst and best queries and the CMC curve as
            PNGs to `visualize_dir` (default: beside the run or features file).
        device: where the model runs (auto, cpu or cuda); the precision is `train.amp`.
        reporter: progress of the embedding (silent when None).

    Returns:
        The metrics (see `reidcli.metrics.evaluate.evaluate_features`), with `checkpoint`,
        `split`, `data_root` and `eval_json` for a model, `features_file` when saved, and
        `figures` when drawn. A model's metrics are also written beside its checkpoint: one
        file per prepared dataset and split (`eval.json` for the run's own test split).
    """
    check_device(device)
    from reidcli.engine.evaluation import EvalRequest, evaluate_target

    request = EvalRequest(
        target=target, features=features, recipe=recipe, overrides=as_overrides(overrides),
        split=split, save_features=save_features, visualize=visualize,
        visualize_dir=visualize_dir, device=device, runs_dir=runs_dir,
    )  # fmt: skip
    return evaluate_target(request, reporter or Reporter())


def rerank(
    features_path: str | Path,
    *,
    recipe: str | Path | None = None,
    overrides: Overrides = (),
    out: str | Path | None = None,
) -> dict:
    """k-reciprocal re-ranking of a features file: metrics before and after (under `reranked`).

    The options are the recipe's `eval.rerank` (k1, k2, lambda) and `eval.distance`: schema
    defaults, then `recipe`, then `overrides` (e.g. `{"eval.rerank.k1": 30}`). With `out`, the
    (Q, G) float32 re-ranked distances are written there as `.npy`, streamed block by block.
    """
    from reidcli.metrics.evaluate import run_evaluation
    from reidcli.metrics.features import load_features
    from reidcli.recipe import load_recipe

    cfg = load_recipe(recipe, [*as_overrides(overrides), "eval.rerank.enabled=true"]).eval
    result = run_evaluation(load_features(features_path), cfg, rerank_out=out)
    if out is not None:
        result.metrics["reranked"]["out"] = str(out)
    return result.metrics


def as_overrides(overrides: Overrides) -> list[str]:
    """`KEY=VALUE` strings from strings or a {dotted key: value} mapping (values as JSON)."""
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value, default=str)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        raise RecipeError(f"overrides must be a list of KEY=VALUE strings, got {overrides!r}")
    return list(overrides)
