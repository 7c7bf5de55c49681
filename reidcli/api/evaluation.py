"""Scoring: `reid eval` (a model, a features file, or a features file against an index) and
`reid rerank`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reidcli.api.overrides import Overrides, as_overrides
from reidcli.devices import check_device
from reidcli.errors import UsageError
from reidcli.recipe.options import CalibrateOptions, EvalOptions, RerankOptions
from reidcli.reporting import Reporter
from reidcli.results import CalibrateResult, CalibrationCheck, EvalResult


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


def calibrate(
    source: str | Path,
    options: CalibrateOptions | None = None,
    *,
    reporter: Reporter | None = None,
    **fields: Any,
) -> CalibrateResult:
    """Distance thresholds at stated false-match rates (FAR), measured on labeled features.

    Positive pairs are crops of one identity from different cameras, negative pairs crops of
    different identities: query x gallery of a two-sided features file (or of a run's split),
    every pair of rows of a one-sided one. For each FAR the threshold is the largest distance
    under which at most that share of negatives lies (same person when distance < threshold);
    the result gives the true-match rate (TAR) there, bootstrap intervals over identities, and
    the ROC curve.

    Args:
        source: a labeled features file (`reid eval --save-features`, `reid embed --dataset`,
            or a `reid embed` file with pids and camids), or a run folder / checkpoint whose
            `options.split` (default val) is embedded.
        options: a `CalibrateOptions` (far, out, plot, distance, split, bootstrap, confidence,
            seed, device, runner, recipe), or its fields as keyword arguments; not `verify`
            (see `check_calibration`).

    Returns:
        The calibration (also written to `result.out`: RUN/calibration.json for a run,
        FEATURES.calibration.json beside a features file) and the ROC figure's path.

    Raises:
        FeaturesError: features without person ids, of one identity, or of one camera; a FAR
            below what the negatives can measure (the smallest measurable one is named).
    """
    from reidcli.verbs.calibrate import calibrate as run

    options = CalibrateOptions.resolve(options, fields)
    if options.verify is not None:
        raise UsageError("verify measures a calibration: call check_calibration")
    check_device(options.device)
    return run(source, options, reporter or Reporter())


def check_calibration(
    source: str | Path,
    calibration: str | Path,
    options: CalibrateOptions | None = None,
    *,
    reporter: Reporter | None = None,
    **fields: Any,
) -> CalibrationCheck:
    """The FAR and TAR that a calibration's thresholds give on other labeled features (another
    split, another camera network), with bootstrap intervals over identities.

    Raises:
        CalibrationError: a calibration made for another width, distance or checkpoint.
    """
    from reidcli.verbs.calibrate import verify

    options = CalibrateOptions.resolve(options, fields)
    options = options.model_copy(update={"verify": str(calibration)})
    check_device(options.device)
    return verify(source, options, reporter or Reporter())
