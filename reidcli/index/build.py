"""`reid index build|add|remove`: creating, growing and pruning galleries."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from reidcli import __version__
from reidcli.errors import GalleryIndexError, OutputError, RecipeError
from reidcli.index.gallery import AUTO_FLAT_MAX, KINDS, METRICS, Rows, prepare_vectors
from reidcli.index.inputs import load_rows
from reidcli.index.paths import spellings, stored_path
from reidcli.index.store import check_backend, info, open_gallery, writing
from reidcli.outputs import check_output_file

log = logging.getLogger(__name__)

RECALL_SAMPLE = 1000
SHOWN = 5
# Beyond these a graph or a re-scoring takes memory and time out of proportion to any gain.
LIMITS = {"--hnsw-m": 256, "--ef-construction": 1 << 16, "--ef-search": 1 << 16, "--refine": 1000}
HNSW_M, EF_CONSTRUCTION, EF_SEARCH = 32, 80, 64
# IVF-PQ: search an eighth of the lists; choose each of the first 10 hits among 10 candidates.
NPROBE_SHARE, REFINE = 8, 10


def resolve_params(
    count: int, dim: int, kind: str, *, nlist=None, pq_m=None, refine=None, nprobe=None,
    hnsw_m=None, ef_construction=None, ef_search=None,
) -> tuple[str, dict, dict]:  # fmt: skip
    """(kind, build parameters, default search parameters), checked against the data.

    Raises:
        RecipeError: an unknown kind, parameters of another kind, or values the data cannot
            take (more lists than rows, sub-quantizers that do not divide the width).
    """
    from reidcli.index.faiss_backend import default_nlist, default_pq_m

    if kind == "auto":
        kind = "flat" if count < AUTO_FLAT_MAX else "ivfpq"
    if kind not in KINDS:
        raise RecipeError(f"unknown index type {kind!r}; choose auto or one of {', '.join(KINDS)}")
    given = {
        "--nlist": nlist, "--pq-m": pq_m, "--refine": refine, "--nprobe": nprobe,
        "--hnsw-m": hnsw_m, "--ef-construction": ef_construction, "--ef-search": ef_search,
    }  # fmt: skip
    own = {"flat": (), "hnsw": ("--hnsw-m", "--ef-construction", "--ef-search"),
           "ivfpq": ("--nlist", "--pq-m", "--refine", "--nprobe")}[kind]  # fmt: skip
    stray = [name for name, value in given.items() if value is not None and name not in own]
    if stray:
        raise RecipeError(f"{', '.join(stray)} do(es) not apply to a {kind} index")
    for name, value in given.items():
        low, high = (0 if name == "--refine" else 1), LIMITS.get(name, 1 << 30)
        if value is not None and not low <= value <= high:
            raise RecipeError(f"{name} must be in {low}..{high}, got {value}")
    if kind == "flat":
        return kind, {}, {}
    if kind == "hnsw":
        params = {"hnsw_m": hnsw_m or HNSW_M, "ef_construction": ef_construction or EF_CONSTRUCTION}
        return kind, params, {"ef_search": ef_search or EF_SEARCH}
    nlist = nlist or default_nlist(count)
    pq_m = pq_m or default_pq_m(dim)
    if nlist > count:
        raise RecipeError(f"--nlist {nlist} needs at least as many rows; the file has {count}")
    if dim % pq_m:
        raise RecipeError(f"--pq-m {pq_m} must divide the embedding width {dim}")
    if count < 256:
        raise RecipeError(f"IVF-PQ trains 256 centroids per sub-space: 256+ rows, got {count}")
    refine = REFINE if refine is None else refine
    params = {"nlist": nlist, "pq_m": pq_m, "nbits": 8, "refine": refine}
    return kind, params, {"nprobe": min(nlist, nprobe or max(1, nlist // NPROBE_SHARE))}


def build_index(
    features: str | Path,
    out: str | Path,
    *,
    kind: str = "auto",
    metric: str | None = None,
    backend: str = "faiss",
    uri: str | None = None,
    overwrite: bool = False,
    recall_sample: int = RECALL_SAMPLE,
    seed: int = 0,
    **params,
) -> dict:
    """See `reidcli.api.index_build`."""
    check_backend(backend, uri)
    if metric is not None and metric not in METRICS:
        raise RecipeError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if recall_sample < 1:
        raise RecipeError(f"--recall-sample must be >= 1, got {recall_sample}")
    if backend == "faiss":
        _check_replaceable(check_output_file(out, "index file"), overwrite)
    rows, stated = load_rows(features, "gallery")
    if stated is not None and metric is not None and stated != metric:
        raise GalleryIndexError(f"{features}: features for the {stated} distance, not {metric}")
    metric = metric or stated or "cosine"
    kind, build, search = resolve_params(len(rows), rows.features.shape[1], kind, **params)
    meta = {
        "format": "reid-index", "version": 1, "backend": backend, "kind": kind, "metric": metric,
        "dim": int(rows.features.shape[1]), "params": build, "search": search, "next_id": 0,
        "count": 0, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reidcli": __version__,
        "root": os.getcwd(),
    }  # fmt: skip
    rows = rooted(rows, meta["root"])
    started = time.perf_counter()
    vectors = prepare_vectors(rows.features, metric)
    with writing(out, backend, uri):
        if backend == "milvus":
            from reidcli.index.milvus_backend import MilvusGallery

            gallery = MilvusGallery.create(uri, str(out), meta, overwrite=overwrite)
        else:
            from reidcli.index.faiss_backend import FaissGallery

            _check_replaceable(Path(out), overwrite)
            gallery = FaissGallery.build(Path(out), vectors, meta, seed)
        return _fill(gallery, rows, vectors, features, started, recall_sample, seed)


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """An index file may replace only another reid index file, and only with `overwrite`.

    Raises:
        OutputError: `out` exists without `overwrite`, or is not a reid index.
    """
    if not out.exists():
        return
    if not overwrite:
        raise OutputError(f"{out} exists: remove it, or pass --overwrite")
    from reidcli.index.container import Reader

    try:
        Reader(out)
    except GalleryIndexError:
        raise OutputError(
            f"{out} exists and is not a reid index; reid never replaces files it did not write"
        ) from None


def _fill(gallery, rows, vectors, features, started, recall_sample, seed) -> dict:
    kind, search = gallery.kind, gallery.meta["search"]
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
    return info(gallery)


def add_to_index(index, features, *, backend="faiss", uri=None) -> dict:
    """See `reidcli.api.index_add`."""
    rows, stated = load_rows(features, "gallery")
    with writing(index, backend, uri):
        gallery = open_gallery(index, backend, uri)
        gallery.check_features(rows.features, str(features), stated)
        rows = rooted(rows, gallery.meta.get("root") or os.getcwd())
        before = gallery.count
        present = gallery.ids_of(paths=rows.paths.astype(str))
        if present.size:
            log.warning("%d of the paths are already in the index: added again", present.size)
        ids = gallery.add(rows)
        gallery.save()
    return {"index": str(index), "added": len(ids), "count": gallery.count, "before": before,
            "first_id": int(ids[0]), "last_id": int(ids[-1])}  # fmt: skip


def rooted(rows: Rows, root: str) -> Rows:
    """The rows with their paths as an index rooted at `root` stores them (`stored_path`)."""
    cwd = os.getcwd()
    paths = np.asarray([stored_path(p, root, cwd) for p in rows.paths], dtype=object)
    return Rows(rows.features, paths, rows.pids, rows.camids)


def remove_from_index(index, *, paths_file=None, pid=None, backend="faiss", uri=None) -> dict:
    """See `reidcli.api.index_remove`."""
    if (paths_file is None) == (pid is None):
        raise RecipeError("give --paths FILE or --pid N (one of them)")
    if pid is not None and pid < 0:
        raise RecipeError(f"--pid must be a person id (>= 0), got {pid}")
    wanted = _read_paths(Path(paths_file)) if paths_file is not None else []
    with writing(index, backend, uri):
        gallery = open_gallery(index, backend, uri)
        if pid is not None:
            ids = gallery.ids_of(pid=pid)
            if ids.size == 0:
                raise GalleryIndexError(f"no row of person {pid} in {index}: nothing removed")
        else:
            ids = _ids_of_paths(gallery, wanted, paths_file, index)
        before = gallery.count
        result = gallery.remove(ids)
        gallery.save()
    return {"index": str(index), **result, "before": before, "count": gallery.count}


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
