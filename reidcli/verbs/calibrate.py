"""`reid calibrate`: distance thresholds at stated false-match rates, and the calibration kept
with what produced the distances (a run, an export, an index).

This module imports no torch at the top: calibrating a features file never loads it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from reidcli import __version__
from reidcli.errors import CalibrationError, FeaturesError
from reidcli.metrics import calibration as cal
from reidcli.metrics.features import MODEL_KEY
from reidcli.outputs import check_input_file, check_output_file, register_output, write_text_atomic
from reidcli.recipe.options import CalibrateOptions, EvalOptions
from reidcli.reporting import Reporter
from reidcli.results.calibration import (
    FORMAT,
    VERSION,
    CalibrateResult,
    Calibration,
    CalibrationCheck,
    MeasuredThreshold,
    PairCounts,
    Threshold,
)

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Labeled:
    """Labeled features to calibrate on: one or two sides, their distance and their model."""

    source: str
    first: cal.Side
    second: cal.Side | None
    metric: str
    dim: int
    model_sha256: str | None


def calibrate(source, options: CalibrateOptions, reporter: Reporter) -> CalibrateResult:
    """See `reidcli.api.calibrate`."""
    out = check_output_file(_default_out(source, options), "calibration file")
    labeled, run_dir = _labeled(source, options, reporter)
    pairs = _pairs(labeled, max(options.far), None, options.seed)
    levels = cal.calibrate_levels(
        pairs, options.far, options.bootstrap, options.confidence, options.seed
    )
    doc = {
        "format": FORMAT, "version": VERSION, "metric": labeled.metric, "dim": labeled.dim,
        "model_sha256": labeled.model_sha256, "source": labeled.source,
        "split": options.split if run_dir is not None else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reidcli": __version__,
        "rule": "same person when distance < threshold",
        "pairs": _pair_counts(pairs), "min_far": pairs.min_far,
        "bootstrap": {"replicates": options.bootstrap, "confidence": options.confidence,
                      "seed": options.seed, "over": "identities"},
        "thresholds": [_level_doc(level) for level in levels],
        "curve": cal.curve(pairs),
    }  # fmt: skip
    calibration = Calibration.from_document(doc)
    write_text_atomic(out, json.dumps(doc, indent=2) + "\n")
    if run_dir is not None and out.parent.resolve() == run_dir.resolve():
        register_output(run_dir, out.name)
    figure = None
    if options.plot:
        from reidcli.metrics.visualize import save_roc_curve

        figure = save_roc_curve(out.with_name(f"{out.stem}_roc.png"), doc)
        if run_dir is not None and figure.parent.resolve() == run_dir.resolve():
            register_output(run_dir, figure.name)
        figure = str(figure)
    return CalibrateResult(calibration, str(out), figure)


def verify(source, options: CalibrateOptions, reporter: Reporter) -> CalibrationCheck:
    """`calibrate` with `options.verify`: the FAR and TAR of a calibration's thresholds on
    SOURCE."""
    assert options.verify is not None
    calibration = read_calibration(options.verify)
    labeled, _ = _labeled(source, options, reporter, metric=calibration.metric)
    calibration.check_model(labeled.dim, labeled.metric, labeled.model_sha256, labeled.source)
    thresholds = [level.threshold for level in calibration.thresholds]
    pairs = _pairs(labeled, 0.0, max(thresholds), options.seed)
    measured = cal.measure(pairs, thresholds, options.bootstrap, options.confidence, options.seed)
    rows = tuple(
        MeasuredThreshold(level.far, m.threshold, m.far, m.tar, m.far_ci, m.tar_ci)
        for level, m in zip(calibration.thresholds, measured, strict=True)
    )
    counts = PairCounts.from_document(_pair_counts(pairs))
    return CalibrationCheck(str(options.verify), labeled.source, counts, rows)


def read_calibration(path: str | Path) -> Calibration:
    """A calibration file.

    Raises:
        CalibrationError: missing, unreadable or not a reid calibration.
    """
    path = check_input_file(path, "calibration file", CalibrationError)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CalibrationError(f"{path}: not a readable calibration file ({err})") from None
    return Calibration.from_document(doc, str(path))


def _default_out(source, options: CalibrateOptions) -> Path:
    if options.out is not None:
        return Path(options.out)
    source = Path(source)
    if source.is_dir():
        return source / CALIBRATION_FILE
    if source.suffix == ".npz":
        return source.with_name(f"{source.stem}.calibration.json")
    return source.parent / CALIBRATION_FILE  # a checkpoint: beside it, in its run folder


def _labeled(source, options: CalibrateOptions, reporter, metric: str | None = None):
    """The labeled features of SOURCE (a features file, or a run's split embedded)."""
    path = Path(source)
    if path.suffix == ".npz" or (path.is_file() and _is_npz(path)):
        return _from_file(path, options, metric), None
    return _from_run(path, options, reporter)


def _is_npz(path: Path) -> bool:
    """A zip archive of `.npy` arrays (a PyTorch checkpoint is a zip archive too)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return bool(names) and all(name.endswith(".npy") for name in names)


def _from_file(path: Path, options: CalibrateOptions, metric: str | None) -> Labeled:
    from reidcli.index.inputs import stated_distance
    from reidcli.metrics.features import check_rows, read_npz, validate_features

    arrays = read_npz(path)
    stated = stated_distance(arrays, path)
    asked = options.distance or metric
    if stated is not None and asked is not None and asked != stated:
        raise FeaturesError(f"{path}: features for the {stated} distance, not {asked}")
    chosen = stated or asked or "cosine"
    model = str(arrays[MODEL_KEY]) if MODEL_KEY in arrays else None
    if "features" in arrays:
        if "pids" not in arrays or "camids" not in arrays:
            raise FeaturesError(
                f"{path}: no person ids (pids) and cameras (camids): calibration needs labeled "
                "features (reid embed --dataset, or reid eval --save-features)"
            )
        check_rows(arrays, "", str(path))
        first, second = _sides(path, arrays["features"], arrays["pids"], arrays["camids"])
        dim = int(arrays["features"].shape[1])
    elif "query_features" in arrays:
        feats = validate_features(arrays, str(path))
        first, second = _sides(
            path, feats.query_features, feats.query_pids, feats.query_camids,
            (feats.gallery_features, feats.gallery_pids, feats.gallery_camids),
        )  # fmt: skip
        dim = int(feats.query_features.shape[1])
    else:
        raise FeaturesError(
            f"{path}: no `features` (a `reid embed` file) nor `query_features` (a `reid eval "
            "--features` file)"
        )
    return Labeled(str(path), first, second, chosen, dim, model)


def _sides(path, features, pids, camids, other=None):
    try:
        return cal.sides(features, pids, camids, other)
    except FeaturesError as err:
        raise FeaturesError(f"{path}: {err}") from None


def _from_run(path: Path, options: CalibrateOptions, reporter):
    from reidcli.export.metadata import file_sha256
    from reidcli.verbs.evaluate import model_features

    eval_options = EvalOptions(
        split=options.split, device=options.device, runner=options.runner, recipe=options.recipe
    )
    feats, recipe, _, checkpoint, _ = model_features(path, eval_options, [], reporter)
    first, second = _sides(
        checkpoint, feats.query_features, feats.query_pids, feats.query_camids,
        (feats.gallery_features, feats.gallery_pids, feats.gallery_camids),
    )  # fmt: skip
    labeled = Labeled(
        f"{checkpoint} ({options.split} split of {recipe.data.root})", first, second,
        recipe.eval.distance, int(feats.query_features.shape[1]), file_sha256(checkpoint),
    )  # fmt: skip
    if options.distance is not None and options.distance != recipe.eval.distance:
        raise CalibrationError(
            f"{checkpoint}: the run evaluates with the {recipe.eval.distance} distance, not "
            f"{options.distance}; a run is calibrated in its own distance (drop distance)"
        )
    return labeled, Path(checkpoint).parent


def _pairs(labeled: Labeled, max_far: float, below: float | None, seed: int) -> cal.Pairs:
    try:
        return cal.collect_pairs(
            labeled.first, labeled.second, labeled.metric, max_far, below=below, seed=seed
        )  # type: ignore[arg-type]
    except FeaturesError as err:
        raise FeaturesError(f"{labeled.source}: {err}") from None


def _pair_counts(pairs: cal.Pairs) -> dict:
    return {
        "positive": len(pairs.positives), "negative": int(pairs.num_negatives),
        "identities": pairs.num_identities, "cameras": pairs.num_cameras,
        "kind": "all pairs of rows" if pairs.one_sided else "query x gallery",
    }  # fmt: skip


def _level_doc(level: cal.Level) -> dict:
    return Threshold(
        level.far, level.threshold, level.tar, level.false_matches, level.threshold_ci,
        level.far_ci, level.tar_ci,
    ).to_json()  # fmt: skip


def calibration_for(
    path: str | Path, dim: int, metric: str, model_sha256: str | None, what: str
) -> Calibration:
    """A calibration file checked against a model's distances (for an index to keep).

    Raises:
        CalibrationError: unreadable, or made for another width, distance or checkpoint.
    """
    calibration = read_calibration(path)
    calibration.check_model(dim, metric, model_sha256, what)
    if model_sha256 is None or calibration.model_sha256 is None:
        log.warning(
            "%s: the checkpoint behind %s is not recorded; only the embedding width and the "
            "distance were checked", path, what,
        )  # fmt: skip
    return calibration


def runner_model(runner) -> str | None:
    """The SHA-256 of the checkpoint behind a runner: its export metadata's, or the checkpoint
    file's own (None for an exported file that records none)."""
    from reidcli.export.metadata import file_sha256

    recorded = runner.metadata.get("checkpoint_sha256")
    if recorded:
        return str(recorded)
    return file_sha256(runner.source) if runner.backend == "pytorch" else None


def kept_with_checkpoint(checkpoint: Path, sha256: str, dim: int, metric: str) -> dict | None:
    """The calibration of a run folder (`calibration.json` beside the checkpoint) as an export
    keeps it, when it was made with this checkpoint; else None (a warning says why)."""
    path = Path(checkpoint).parent / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        calibration = read_calibration(path)
        calibration.check_model(dim, metric, sha256, str(checkpoint))
    except CalibrationError as err:
        log.warning("%s is not kept with the export: %s", path, err)
        return None
    return calibration.kept()
