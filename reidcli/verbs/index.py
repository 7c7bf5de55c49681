"""`reid index build|add|remove|calibrate`: creating, growing, pruning galleries and keeping
their calibration (the stores themselves are `reidcli.index`; searching is `verbs.search`;
compaction, rebuilding and upgrading are `verbs.index_upkeep`)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from reidcli import __version__
from reidcli.errors import GalleryIndexError, OutputError, RecipeError
from reidcli.index.gallery import AUTO_FLAT_MAX, Rows, prepare_vectors
from reidcli.index.inputs import check_same_model, feature_sources, load_rows
from reidcli.index.paths import spellings, stored_path
from reidcli.index.store import info, open_gallery, writing
from reidcli.metrics.features import recorded_model
from reidcli.recipe.options import (
    GalleryAt,
    HnswOptions,
    IndexAddOptions,
    IndexBuildOptions,
    IndexRemoveOptions,
    IvfpqOptions,
)
from reidcli.results import IndexAddResult, IndexInfo, IndexRemoveResult

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
    from reidcli.index.faiss_common import default_nlist, default_pq_m

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
        _check_replaceable(Path(out), options.overwrite)
    rows, stated = load_rows(features, "gallery")
    metric = options.metric
    if stated is not None and metric is not None and stated != metric:
        raise GalleryIndexError(f"{features}: features for the {stated} distance, not {metric}")
    metric = metric or stated or "cosine"
    kind, build, search = resolve_params(len(rows), rows.features.shape[1], options)
    model = recorded_model(features)
    calibration = None
    if options.calibration is not None:
        calibration = kept_calibration(
            options.calibration, int(rows.features.shape[1]), metric, model, f"index {out}"
        )
    meta = {
        "format": "reid-index", "version": 2, "backend": backend, "kind": kind, "metric": metric,
        "dim": int(rows.features.shape[1]), "params": build, "search": search, "next_id": 0,
        "count": 0, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reidcli": __version__,
        "root": os.getcwd(), "model_sha256": model, "calibration": calibration,
        "compact": {"max_segments": options.max_segments, "max_deleted": options.max_deleted},
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
            if Path(out).is_file():  # an index of the single-file format, replaced as asked
                Path(out).unlink()
            gallery = FaissGallery.build(Path(out), vectors, meta, options.seed)
        return _fill(gallery, rows, vectors, features, started, options)


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """An index may replace only another reid index, and only with `overwrite`.

    Raises:
        OutputError: `out` exists without `overwrite`, or is not a reid index; a parent of it
            is a file.
    """
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{out}: {parent} is a file, not a folder")
            break
    if not out.exists():
        return
    if not overwrite:
        raise OutputError(f"{out} exists: remove it, or pass overwrite (--overwrite)")
    from reidcli.index.legacy import refuse_legacy
    from reidcli.index.segments import is_index_folder

    if is_index_folder(out):
        return
    try:
        if out.is_file():
            refuse_legacy(out)
    except GalleryIndexError as err:
        if "reid index upgrade" in str(err):
            return
    raise OutputError(
        f"{out} exists and is not a reid index; reid never replaces files it did not write"
    )


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


def add_to_index(index, features, options: IndexAddOptions) -> IndexAddResult:
    """See `reidcli.api.index_add`."""
    sources = feature_sources(features)
    loaded = [(source, *load_rows(source, "gallery")) for source in sources]
    with writing(index, options.backend, options.uri):
        gallery = open_gallery(index, options.backend, options.uri)
        root = gallery.meta.get("root") or os.getcwd()
        parts = []
        for source, rows, stated in loaded:
            gallery.check_features(rows.features, str(source), stated)
            check_same_model(gallery.meta.get("model_sha256"), recorded_model(source),
                             str(source), index)  # fmt: skip
            parts.append(rooted(rows, root))
        paths = np.concatenate([rows.paths for rows in parts]).astype(str)
        unique, seen = np.unique(paths, return_counts=True)
        if (seen > 1).any():
            twice = unique[seen > 1]
            raise GalleryIndexError(
                f"{features}: {twice.size} paths appear more than once ({_shown(twice)}): "
                "nothing added"
            )
        present = gallery.ids_of(paths=paths)
        if present.size and not options.replace:
            stored = gallery.labels(present)[0]
            raise GalleryIndexError(
                f"{present.size} of the {len(paths)} paths are already in {index} "
                f"({_shown(stored)}): nothing added; pass --replace to replace their rows"
            )
        before = gallery.count
        if present.size:
            gallery.remove(present)
        ids = np.concatenate([gallery.add(rows) for rows in parts])
        gallery.save()
    return IndexAddResult(str(index), len(ids), gallery.count, before, int(ids[0]), int(ids[-1]),
                          int(present.size), len(parts),
                          list(getattr(gallery, "compacted", [])))  # fmt: skip


def _shown(paths) -> str:
    paths = [str(p) for p in paths]
    return ", ".join(paths[:SHOWN]) + (", ..." if len(paths) > SHOWN else "")


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
    """A calibration file as an index keeps it (`Calibration.kept`, and the file's path), checked
    against the index's width, distance and checkpoint."""
    from reidcli.verbs.calibrate import calibration_for

    return calibration_for(path, dim, metric, model, what).kept() | {"file": str(path)}


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
        purged = []
        if options.purge:
            if not hasattr(gallery, "purge"):
                raise GalleryIndexError(
                    "--purge applies to faiss index folders; Milvus removes deleted rows from its "
                    "files when it compacts its segments, on its own schedule"
                )
            purged = gallery.purge()
        gallery.save()
    return IndexRemoveResult(
        str(index),
        result["removed"],
        result["verified"],
        before,
        gallery.count,
        purged,
        [line for line in getattr(gallery, "compacted", []) if line not in purged],
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
        raise GalleryIndexError(
            f"{len(missing)} of the {len(wanted)} paths in {paths_file} are not in {index} "
            f"({_shown(missing)}): nothing removed. Paths are matched as written, absolute, and "
            f"relative to the index's root {root}"
        )
    return ids
