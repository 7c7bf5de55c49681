"""One function per verb, with typed arguments; the CLI is a thin skin over these.

Importing this module does not import torch; each verb imports what it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reidcli.engine.trainer import TrainResult
    from reidcli.recipe import Recipe


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


def evaluate(
    target: str | Path | None = None,
    *,
    features: str | Path | None = None,
    recipe: str | Path | None = None,
    split: str = "test",
    flip: bool | None = None,
    distance: str | None = None,
    ranks: tuple[int, ...] | None = None,
    rerank: dict | bool | None = None,
    query_expansion: dict | bool | None = None,
    protocol: str = "market",
    seed: int = 0,
    save_features: str | Path | None = None,
    visualize: int = 0,
    visualize_dir: str | Path | None = None,
    device: str = "auto",
    amp: str | None = None,
    runs_dir: str | Path = "runs",
) -> dict:
    """Evaluate a trained model on a prepared dataset, or saved features without a model.

    Args:
        target: a run folder (its best.pt, else last.pt), a checkpoint, or None for the newest
            run under `runs_dir`. Ignored with `features`.
        features: a features `.npz` file to score instead of running a model.
        recipe: the recipe of a weights file that carries none (a LightMBN checkpoint).
        split: "test" (query/gallery) or "val" (the validation identities).
        flip, distance, ranks: override the recipe's `eval` section (features files default to
            cosine distance).
        rerank, query_expansion: True (defaults) or option mappings (k1, k2, lambda_; k, alpha).
        protocol: "market", or "cuhk03" (classic single-gallery-shot, seeded by `seed`).
        save_features: write the extracted features (with image paths) to this `.npz`.
        visualize: write ranked lists of that many worst and best queries and the CMC curve as
            PNGs to `visualize_dir` (default: beside the run or features file).
        device, amp: where and in which precision the model runs (amp defaults to the recipe's).

    Returns:
        The metrics (see `reidcli.metrics.evaluate.evaluate_features`), with `checkpoint` and
        `eval_json` for a model, `features_file` when saved, and `figures` when drawn. A model's
        metrics are also written to `eval.json` beside its checkpoint.
    """
    options = dict(locals())
    from reidcli.engine.evaluation import evaluate_target

    return evaluate_target(**options)


def rerank(
    features_path: str | Path,
    k1: int = 20,
    k2: int = 6,
    lambda_: float = 0.3,
    distance: str = "cosine",
    out: str | Path | None = None,
) -> dict:
    """k-reciprocal re-ranking of a features file: metrics before and after (under `reranked`).

    With `out`, the (Q, G) float32 re-ranked distances are written there as `.npy`, streamed
    block by block. See `reidcli.metrics.rerank.iter_rerank`.
    """
    from reidcli.metrics.evaluate import run_evaluation
    from reidcli.metrics.features import load_features
    from reidcli.recipe.run import Eval, Rerank

    cfg = Eval(rerank=Rerank(enabled=True, k1=k1, k2=k2, lambda_=lambda_), distance=distance)
    result = run_evaluation(load_features(features_path), cfg, rerank_out=out)
    if out is not None:
        result.metrics["reranked"]["out"] = str(out)
    return result.metrics
