"""`reid search`: the top-K gallery rows of each query, marked against a threshold when one is
given (the stores themselves are `reidcli.index`)."""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np

from reidcli.errors import CalibrationError, FeaturesError, RecipeError
from reidcli.index.gallery import UNKNOWN, Gallery, Hits, Rows
from reidcli.index.inputs import check_same_model, load_rows
from reidcli.index.search import exclusion, search_params
from reidcli.index.store import open_gallery
from reidcli.metrics.features import recorded_model
from reidcli.outputs import atomic_path, check_output_file
from reidcli.recipe.options import SearchOptions, parse_threshold
from reidcli.reporting import Reporter
from reidcli.results import Hit, MatchThreshold, QueryHits, SearchResult

log = logging.getLogger(__name__)


def search(index, queries, options: SearchOptions, reporter: Reporter) -> SearchResult:
    """See `reidcli.api.search`."""
    if options.out is not None:
        check_results_path(options.out)
    if options.model is not None:
        rows, stated, model = embed_queries(options.model, queries, options.device, reporter)
        source = "images"
    else:
        if not isinstance(queries, str | Path):
            raise RecipeError("give one features file, or images with a model")
        rows, stated = load_rows(queries, "query")
        source, model = str(queries), recorded_model(queries)
    gallery = open_gallery(index, options.backend, options.uri)
    gallery.check_features(rows.features, source, stated)
    check_same_model(gallery.meta.get("model_sha256"), model, source, index)
    threshold = None
    if options.threshold is not None:
        threshold = resolve_threshold(options, gallery, model or gallery.meta.get("model_sha256"))
    params = search_params(gallery, options.nprobe, options.ef_search)
    keep = None
    if options.exclude_same_camera:
        if (rows.camids == UNKNOWN).any():
            raise FeaturesError(f"{source}: exclude_same_camera needs each query's camid")
        keep = exclusion(gallery, rows.pids, rows.camids, same_pid_only=True)
    started = time.perf_counter()
    hits = gallery.search(rows.features, options.topk, params, keep)
    seconds = time.perf_counter() - started
    limit = None if threshold is None else threshold.distance
    results = _results(gallery, rows, hits, limit, options.matches_only)
    out = str(write_results(results, options.out)) if options.out is not None else None
    return SearchResult(
        str(index), gallery.kind, gallery.metric, options.topk, round(seconds, 4), results, out,
        threshold,
    )  # fmt: skip


def resolve_threshold(
    options: SearchOptions, gallery: Gallery, model: str | None
) -> MatchThreshold:
    """The distance threshold of `options.threshold`: given, or calibrated for a FAR (from
    `options.calibration` or the index's calibration), checked against the index's model.

    Raises:
        CalibrationError: no calibration, a FAR not calibrated, or another model's calibration.
    """
    from reidcli.results.calibration import Calibration
    from reidcli.verbs.calibrate import read_calibration

    assert options.threshold is not None
    kind, value = parse_threshold(options.threshold)
    if kind == "distance":
        return MatchThreshold(value, None, None, "given")
    if options.calibration is not None:
        calibration, where = read_calibration(options.calibration), str(options.calibration)
    elif gallery.meta.get("calibration"):
        calibration = Calibration.from_document(gallery.meta["calibration"], "the index")
        where = "the index's calibration"
    else:
        raise CalibrationError(
            f"far={value:g} needs a calibration: the index has none (reid index calibrate INDEX "
            "FILE, or reid index build --calibration FILE), and none was given (--calibration)"
        )
    calibration.check_model(gallery.dim, gallery.metric, model, "the index")
    level = calibration.at_far(value)
    return MatchThreshold(level.threshold, level.far, level.tar, where)


def embed_queries(model, images, device: str, reporter) -> tuple[Rows, str | None, str | None]:
    """Image queries embedded by a checkpoint or export, as `reid embed` would, the distance
    the model's recipe evaluates with (None for an export) and the checkpoint's SHA-256."""
    from reidcli.inference.images import collect_inputs, run_images
    from reidcli.inference.runners import load_runner
    from reidcli.verbs.calibrate import runner_model

    items = (images,) if isinstance(images, str | Path) else tuple(images)
    runner, (batch, workers, distance, _) = load_runner(model, device)
    paths = collect_inputs(items)
    feats, kept, skipped = run_images(runner, paths, batch, workers, False, reporter)
    for item in skipped:
        log.warning("skipped unreadable image: %s", item["error"])
    n = len(kept)
    unknown = np.full(n, UNKNOWN, np.int64)
    rows = Rows(feats, np.asarray(kept, dtype=object), unknown, unknown.copy())
    return rows, distance, runner_model(runner)


def _results(
    gallery: Gallery, queries: Rows, hits: Hits, limit: float | None, matches_only: bool
) -> tuple[QueryHits, ...]:
    """Each query's hits; with a threshold `limit`, each hit marked (a match when its distance
    is below it) and each query found when its nearest hit is a match."""
    paths, pids, camids = gallery.labels(hits.ids)
    out = []
    for q in range(len(queries)):
        found = tuple(
            Hit(
                str(paths[q, j]),
                int(pids[q, j]),
                int(camids[q, j]),
                float(hits.distances[q, j]),
                None if limit is None else bool(hits.distances[q, j] < limit),
            )
            for j in range(hits.ids.shape[1])
            if hits.ids[q, j] >= 0
        )
        seen = None if limit is None else any(hit.match for hit in found)
        if matches_only:
            found = tuple(hit for hit in found if hit.match)
        pid, camid = int(queries.pids[q]), int(queries.camids[q])
        out.append(QueryHits(str(queries.paths[q]), None if pid == UNKNOWN else pid,
                             None if camid == UNKNOWN else camid, found, seen))  # fmt: skip
    return tuple(out)


def check_results_path(out: str | Path) -> Path:
    """A results file path: `.json` or `.csv`, not a folder.

    Raises:
        RecipeError: another suffix. OutputError: a folder.
    """
    out = check_output_file(out, "results file")
    if out.suffix.lower() not in (".json", ".csv"):
        raise RecipeError(f"out must end in .json or .csv, got {out.name}")
    return out


def write_results(results: tuple[QueryHits, ...], out: str | Path) -> Path:
    """`.json`: the list as printed by --json; `.csv`: one line per hit."""
    out = check_results_path(out)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".json":
            document = [entry.to_json() for entry in results]
            tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
            return out
        with tmp.open("w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            writer = csv.writer(handle)
            marked = any(entry.found is not None for entry in results)
            writer.writerow(["query", "rank", "path", "pid", "camid", "distance"]
                            + (["match"] if marked else []))  # fmt: skip
            for entry in results:
                for rank, hit in enumerate(entry.hits, 1):
                    writer.writerow([entry.path, rank, hit.path, hit.pid, hit.camid,
                                     repr(hit.distance)]
                                    + ([str(hit.match).lower()] if marked else []))  # fmt: skip
    return out
