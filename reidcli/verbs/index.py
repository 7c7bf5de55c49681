"""`reid index build|add|remove` and `reid search`: creating, growing, pruning and searching
galleries (the stores themselves are `reidcli.index`)."""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from reidcli import __version__
from reidcli.errors import (
    CalibrationError,
    FeaturesError,
    GalleryIndexError,
    OutputError,
    RecipeError,
)
from reidcli.index.gallery import AUTO_FLAT_MAX, UNKNOWN, Gallery, Hits, Rows, prepare_vectors
from reidcli.index.inputs import load_rows
from reidcli.index.paths import spellings, stored_path
from reidcli.index.search import exclusion, search_params
from reidcli.index.store import info, open_gallery, writing
from reidcli.outputs import atomic_path, check_output_file
from reidcli.recipe.options import (
    GalleryAt,
    HnswOptions,
    IndexBuildOptions,
    IndexRemoveOptions,
    IvfpqOptions,
    SearchOptions,
    parse_threshold,
)
from reidcli.reporting import Reporter
from reidcli.results import (
    Hit,
    IndexAddResult,
    IndexInfo,
    IndexRemoveResult,
    MatchThreshold,
    QueryHits,
    SearchResult,
)

log = logging.getLogger(__name__)

SHOWN = 5
# IVF-PQ: search an eighth of the lists by default.
NPROBE_SHARE = 8


def resolve_params(count: int, dim: int, options: IndexBuildOptions) -> tuple[str, dict, dict]:
    """(kind, build parameters, default search parameters), checked against the data.

    Raises:
        RecipeError: parameters of another kind than `auto` chose, or values the data cannot
            take (more lists than rows, sub-quantizers that do not divide the width).
    """
    from reidcli.index.faiss_backend import default_nlist, default_pq_m

    kind = options.kind
    if kind == "auto":
        kind = "flat" if count < AUTO_FLAT_MAX else "ivfpq"
        for other in ("hnsw", "ivfpq"):
            if getattr(options, other) is not None and other != kind:
                raise RecipeError(
                    f"{other} parameters do not apply to the {kind} index kind auto chose for "
                    f"{count} rows; give kind {other}"
                )
    if kind == "flat":
        return kind, {}, {}
    if kind == "hnsw":
        hnsw = options.hnsw or HnswOptions()
        params = {"hnsw_m": hnsw.m, "ef_construction": hnsw.ef_construction}
        return kind, params, {"ef_search": hnsw.ef_search}
    ivfpq = options.ivfpq or IvfpqOptions()
    nlist = ivfpq.nlist or default_nlist(count)
    pq_m = ivfpq.pq_m or default_pq_m(dim)
    if nlist > count:
        raise RecipeError(f"nlist {nlist} needs at least as many rows; the file has {count}")
    if dim % pq_m:
        raise RecipeError(f"pq_m {pq_m} must divide the embedding width {dim}")
    if count < 256:
        raise RecipeError(f"IVF-PQ trains 256 centroids per sub-space: 256+ rows, got {count}")
    params = {"nlist": nlist, "pq_m": pq_m, "nbits": 8, "refine": ivfpq.refine}
    nprobe = ivfpq.nprobe or max(1, nlist // NPROBE_SHARE)
    return kind, params, {"nprobe": min(nlist, nprobe)}


def build_index(features: str | Path, out: str | Path, options: IndexBuildOptions) -> IndexInfo:
    """See `reidcli.api.index_build`."""
    backend, uri = options.backend, options.uri
    if backend == "faiss":
        _check_replaceable(check_output_file(out, "index file"), options.overwrite)
    rows, stated = load_rows(features, "gallery")
    metric = options.metric
    if stated is not None and metric is not None and stated != metric:
        raise GalleryIndexError(f"{features}: features for the {stated} distance, not {metric}")
    metric = metric or stated or "cosine"
    kind, build, search = resolve_params(len(rows), rows.features.shape[1], options)
    model = features_model(features)
    calibration = None
    if options.calibration is not None:
        calibration = kept_calibration(
            options.calibration, int(rows.features.shape[1]), metric, model, f"index {out}"
        )
    meta = {
        "format": "reid-index", "version": 1, "backend": backend, "kind": kind, "metric": metric,
        "dim": int(rows.features.shape[1]), "params": build, "search": search, "next_id": 0,
        "count": 0, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reidcli": __version__,
        "root": os.getcwd(), "model_sha256": model, "calibration": calibration,
    }  # fmt: skip
    rows = rooted(rows, meta["root"])
    started = time.perf_counter()
    vectors = prepare_vectors(rows.features, metric)
    with writing(out, backend, uri):
        if backend == "milvus":
            from reidcli.index.milvus_backend import MilvusGallery

            gallery = MilvusGallery.create(uri, str(out), meta, overwrite=options.overwrite)
        else:
            from reidcli.index.faiss_backend import FaissGallery

            _check_replaceable(Path(out), options.overwrite)
            gallery = FaissGallery.build(Path(out), vectors, meta, options.seed)
        return _fill(gallery, rows, vectors, features, started, options)


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """An index file may replace only another reid index file, and only with `overwrite`.

    Raises:
        OutputError: `out` exists without `overwrite`, or is not a reid index.
    """
    if not out.exists():
        return
    if not overwrite:
        raise OutputError(f"{out} exists: remove it, or pass overwrite (--overwrite)")
    from reidcli.index.container import Reader

    try:
        Reader(out)
    except GalleryIndexError:
        raise OutputError(
            f"{out} exists and is not a reid index; reid never replaces files it did not write"
        ) from None


def _fill(gallery, rows, vectors, features, started, options: IndexBuildOptions) -> IndexInfo:
    kind, search = gallery.kind, gallery.meta["search"]
    recall_sample, seed = options.recall_sample, options.seed
    ids = gallery.add(rows, vectors)
    build_seconds = time.perf_counter() - started
    recall = None
    if kind != "flat":
        began = time.perf_counter()
        recall = gallery.measure_recall(vectors, ids, recall_sample, seed)
        recall |= {"k": 10, "search": search, "rows": len(rows),
                   "seconds": round(time.perf_counter() - began, 2)}  # fmt: skip
    meta = gallery.meta
    meta |= {"recall": recall, "build_seconds": round(build_seconds, 2), "source": str(features)}
    gallery.save()
    return IndexInfo.from_document(info(gallery))


def add_to_index(index, features, at: GalleryAt) -> IndexAddResult:
    """See `reidcli.api.index_add`."""
    rows, stated = load_rows(features, "gallery")
    with writing(index, at.backend, at.uri):
        gallery = open_gallery(index, at.backend, at.uri)
        gallery.check_features(rows.features, str(features), stated)
        check_same_model(gallery.meta.get("model_sha256"), features_model(features),
                         str(features), index)  # fmt: skip
        rows = rooted(rows, gallery.meta.get("root") or os.getcwd())
        before = gallery.count
        present = gallery.ids_of(paths=rows.paths.astype(str))
        if present.size:
            log.warning("%d of the paths are already in the index: added again", present.size)
        ids = gallery.add(rows)
        gallery.save()
    return IndexAddResult(str(index), len(ids), gallery.count, before, int(ids[0]), int(ids[-1]))


def calibrate_index(index, calibration, at: GalleryAt) -> IndexInfo:
    """See `reidcli.api.index_calibrate`."""
    with writing(index, at.backend, at.uri):
        gallery = open_gallery(index, at.backend, at.uri)
        meta = gallery.meta
        meta["calibration"] = kept_calibration(
            calibration, gallery.dim, gallery.metric, meta.get("model_sha256"), f"index {index}"
        )
        gallery.save()
    return IndexInfo.from_document(info(gallery))


def kept_calibration(path, dim: int, metric: str, model: str | None, what: str) -> dict:
    """A calibration file's document as an index keeps it (without the curve), checked against
    the index's width, distance and checkpoint."""
    from reidcli.verbs.calibrate import calibration_for

    doc = calibration_for(path, dim, metric, model, what)
    return {k: v for k, v in doc.items() if k != "curve"} | {"file": str(path)}


def rooted(rows: Rows, root: str) -> Rows:
    """The rows with their paths as an index rooted at `root` stores them (`stored_path`)."""
    cwd = os.getcwd()
    paths = np.asarray([stored_path(p, root, cwd) for p in rows.paths], dtype=object)
    return Rows(rows.features, paths, rows.pids, rows.camids)


def remove_from_index(index, options: IndexRemoveOptions) -> IndexRemoveResult:
    """See `reidcli.api.index_remove`."""
    paths_file, pid = options.paths_file, options.pid
    wanted = _read_paths(Path(paths_file)) if paths_file is not None else []
    with writing(index, options.backend, options.uri):
        gallery = open_gallery(index, options.backend, options.uri)
        if pid is not None:
            ids = gallery.ids_of(pid=pid)
            if ids.size == 0:
                raise GalleryIndexError(f"no row of person {pid} in {index}: nothing removed")
        else:
            ids = _ids_of_paths(gallery, wanted, paths_file, index)
        before = gallery.count
        result = gallery.remove(ids)
        gallery.save()
    return IndexRemoveResult(
        str(index), result["removed"], result["verified"], before, gallery.count
    )


def _read_paths(paths_file: Path) -> list[str]:
    if not paths_file.is_file():
        raise GalleryIndexError(f"{paths_file}: no such file of paths")
    text = paths_file.read_text(encoding="utf-8", errors="surrogateescape")
    wanted = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    if not wanted:
        raise GalleryIndexError(f"{paths_file}: lists no path")
    return wanted


def _ids_of_paths(gallery, wanted: list[str], paths_file, index):
    """Row ids of every listed path, in any spelling of it; all of them or an error."""
    root, cwd = gallery.meta.get("root") or os.getcwd(), os.getcwd()
    forms = {path: spellings(path, root, cwd) for path in wanted}
    ids = gallery.ids_of(paths=sorted({form for spelled in forms.values() for form in spelled}))
    stored = set(gallery.labels(ids)[0].tolist()) if ids.size else set()
    missing = [path for path, spelled in forms.items() if stored.isdisjoint(spelled)]
    if missing:
        shown = ", ".join(missing[:SHOWN]) + (", ..." if len(missing) > SHOWN else "")
        raise GalleryIndexError(
            f"{len(missing)} of the {len(wanted)} paths in {paths_file} are not in {index} "
            f"({shown}): nothing removed. Paths are matched as written, absolute, and relative "
            f"to the index's root {root}"
        )
    return ids


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
        source, model = str(queries), features_model(queries)
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


def features_model(path: str | Path) -> str | None:
    """The checkpoint SHA-256 a features file records (reid embed, reid eval --save-features),
    or None; reads that one entry."""
    from reidcli.metrics.features import MODEL_KEY

    try:
        with np.load(path, allow_pickle=False) as data:
            return str(data[MODEL_KEY]) if MODEL_KEY in data.files else None
    except (OSError, ValueError):
        return None  # load_rows has read the file: this cannot fail where it matters


def check_same_model(indexed: str | None, given: str | None, source: str, index) -> None:
    """Refuse features of another checkpoint than the index's, where both are recorded.

    Raises:
        GalleryIndexError: the checkpoints differ.
    """
    if indexed and given and indexed != given:
        raise GalleryIndexError(
            f"{source}: features of checkpoint {given[:12]}, but {index} holds features of "
            f"checkpoint {indexed[:12]}: distances between two models mean nothing"
        )


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
