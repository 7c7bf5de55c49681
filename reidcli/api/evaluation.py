"""Scoring: `reid eval` (a model, a features file, or a features file against an index) and
`reid rerank`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reidcli.api.overrides import Overrides, as_overrides
from reidcli.devices import check_device
from reidcli.recipe.options import EvalOptions, RerankOptions
from reidcli.reporting import Reporter
from reidcli.results import EvalResult


def evaluate(
    target: str | Path | None = None,
    options: EvalOptions | None = None,
    *,
    overrides: Overrides = (),
    reporter: Reporter | None = None,
    **fields: Any,
) -> EvalResult:
    """Evaluate a trained model on a prepared dataset, or saved features without a model.

    How it scores is the recipe's `eval` section (distance, ranks, protocol and its seed, flip,
    rerank, query_expansion): the run's recipe for a model, the schema defaults (or
    `options.recipe`) for a features file, then `overrides`, e.g. `{"eval.rerank.enabled":
    True}`. `data.*` overrides evaluate a run on another prepared dataset (cross-domain);
    `model.*` cannot change. A features file is scored with the `eval` section only, so its
    overrides must be `eval.*` keys.

    Args:
        target: a run folder (its best.pt, else last.pt), a checkpoint, or None for the newest
            run under `options.runs_dir`. Not with `options.features`.
        options: an `EvalOptions` (features, recipe, split, save_features, visualize, device,
            index and its search breadth, ...), or its fields as keyword arguments.
        overrides: recipe values that win (see `Overrides`).
        reporter: progress of the embedding (silent when None).

    Returns:
        The metrics (`result.detail` holds everything computed: the CMC curve, per-camera
        figures), re-ranked ones when re-ranking ran, and what was written: a model's metrics
        also go beside its checkpoint, one file per prepared dataset and split (`eval.json` for
        the run's own test split).
    """
    from reidcli.verbs.evaluate import evaluate as run

    options = EvalOptions.resolve(options, fields)
    check_device(options.device)
    return run(target, options, as_overrides(overrides), reporter or Reporter())


def rerank(
    features_path: str | Path,
    options: RerankOptions | None = None,
    *,
    overrides: Overrides = (),
    **fields: Any,
) -> EvalResult:
    """k-reciprocal re-ranking of a features file: metrics before and after (`reranked`).

    The options are the recipe's `eval.rerank` (k1, k2, lambda), `eval.distance` and
    `eval.protocol` with its seed: schema defaults, then `options.recipe`, then `overrides`
    (`eval.*` keys only, e.g. `{"eval.rerank.k1": 30}`). With `options.out`, the (Q, G)
    float32 re-ranked distances are written there as `.npy`, streamed block by block.
    """
    from reidcli.verbs.evaluate import rerank as run

    options = RerankOptions.resolve(options, fields)
    return run(features_path, options, as_overrides(overrides))
