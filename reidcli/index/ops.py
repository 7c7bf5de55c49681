"""`reid index` and `reid search`: build, grow, prune and query galleries (see `reidcli.api`)."""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from reidcli import __version__
from reidcli.errors import FeaturesError, GalleryIndexError, RecipeError
from reidcli.index.gallery import (
    AUTO_FLAT_MAX,
    KINDS,
    METRICS,
    UNKNOWN,
    Gallery,
    Hits,
    Rows,
    SearchParams,
    prepare_vectors,
)

log = logging.getLogger(__name__)

BACKENDS = ("faiss", "milvus")
RECALL_SAMPLE = 1000
HNSW_M, EF_CONSTRUCTION, EF_SEARCH = 32, 80, 64
# IVF-PQ: search an eighth of the lists; choose each of the first 10 hits among 10 candidates.
NPROBE_SHARE, REFINE = 8, 10


# -- inputs ----------------------------------------------------------------------------------
def load_rows(path: str | Path, side: str) -> tuple[Rows, str | None]:
    """Rows of a `reid embed` file (`features`, `paths`, optional `pids`, `camids`,
    `distance`) or one side ("query"/"gallery") of a `reid eval --features` file.

    Returns:
        The rows and the distance the file states (None when it states none).

    Raises:
        FeaturesError: a missing, unreadable, empty or malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise FeaturesError(f"features file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise FeaturesError(f"{path}: not a readable .npz features file ({err})") from None
    distance = str(arrays["distance"]) if "distance" in arrays else None
    if distance is not None and distance not in METRICS:
        raise FeaturesError(f"{path}: unknown distance {distance!r}")
    if "features" in arrays:
        feats = arrays["features"]
        n = feats.shape[0] if feats.ndim == 2 else 0
        paths = arrays.get("paths")
        pids, camids = arrays.get("pids"), arrays.get("camids")
    elif f"{side}_features" in arrays:
        from reidcli.metrics.features import validate_features

        valid = validate_features(arrays, str(path))
        feats = getattr(valid, f"{side}_features")
        n = len(feats)
        paths = getattr(valid, f"{side}_paths")
        pids, camids = getattr(valid, f"{side}_pids"), getattr(valid, f"{side}_camids")
    else:
        raise FeaturesError(
            f"{path}: no `features` (a `reid embed` file) nor `{side}_features` (a `reid eval "
            "--features` file)"
        )
    if feats.ndim != 2 or n == 0 or feats.shape[1] == 0:
        raise FeaturesError(f"{path}: features must be a non-empty (N, D) array, got {feats.shape}")
    if not (np.issubdtype(feats.dtype, np.floating) or np.issubdtype(feats.dtype, np.integer)):
        raise FeaturesError(f"{path}: features must be real numbers, got {feats.dtype}")
    with np.errstate(over="ignore"):
        feats = np.ascontiguousarray(feats, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(feats).all(1))
    if bad.size:
        raise FeaturesError(f"{path}: non-finite features in {bad.size} row(s), first {bad[0]}")
    paths = (
        np.asarray([f"{path.name}:{i}" for i in range(n)], dtype=object)
        if paths is None
        else np.asarray(paths, dtype=str).astype(object)
    )
    labels = []
    for key, values in (("pids", pids), ("camids", camids)):
        values = np.full(n, UNKNOWN, np.int64) if values is None else np.asarray(values)
        if not np.issubdtype(values.dtype, np.integer) or values.shape != (n,):
            raise FeaturesError(f"{path}: {key} must be {n} integers, got {values.shape}")
        labels.append(values.astype(np.int64))
    if paths.shape != (n,):
        raise FeaturesError(f"{path}: paths must have {n} entries, got {paths.shape}")
    return Rows(feats, paths, labels[0], labels[1]), distance


# -- opening -------------------------------------------------------------------------------
def open_gallery(index: str | Path, backend: str = "faiss", uri: str | None = None) -> Gallery:
    """An existing gallery: a faiss index file, or a Milvus collection at `uri`."""
    _check_backend(backend, uri)
    if backend == "milvus":
        from reidcli.index.milvus_backend import MilvusGallery

        return MilvusGallery.open(uri, str(index))
    from reidcli.index.faiss_backend import FaissGallery

    return FaissGallery.open(Path(index))


def _check_backend(backend: str, uri: str | None) -> None:
    if backend not in BACKENDS:
        raise RecipeError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if (backend == "milvus") != (uri is not None):
        raise RecipeError("--uri (a Milvus server or Milvus Lite file) goes with --backend milvus")


# -- build -----------------------------------------------------------------------------------
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
        if value is not None and value < (0 if name == "--refine" else 1):
            raise RecipeError(f"{name} must be >= {0 if name == '--refine' else 1}, got {value}")
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
    _check_backend(backend, uri)
    if metric is not None and metric not in METRICS:
        raise RecipeError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if recall_sample < 1:
        raise RecipeError(f"--recall-sample must be >= 1, got {recall_sample}")
    rows, stated = load_rows(features, "gallery")
    if stated is not None and metric is not None and stated != metric:
        raise GalleryIndexError(f"{features}: features for the {stated} distance, not {metric}")
    metric = metric or stated or "cosine"
    kind, build, search = resolve_params(len(rows), rows.features.shape[1], kind, **params)
    meta = {
        "format": "reid-index", "version": 1, "backend": backend, "kind": kind, "metric": metric,
        "dim": int(rows.features.shape[1]), "params": build, "search": search, "next_id": 0,
        "count": 0, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reidcli": __version__,
    }  # fmt: skip
    started = time.perf_counter()
    vectors = prepare_vectors(rows.features, metric)
    with writing(out, backend, uri):
        if backend == "milvus":
            from reidcli.index.milvus_backend import MilvusGallery

            gallery = MilvusGallery.create(uri, str(out), meta, overwrite=overwrite)
        else:
            from reidcli.index.faiss_backend import FaissGallery

            out = Path(out)
            if out.exists() and not overwrite:
                raise GalleryIndexError(f"{out} exists: remove it, or pass --overwrite")
            gallery = FaissGallery.build(out, vectors, meta, seed)
        return _fill(gallery, rows, vectors, features, started, recall_sample, seed)


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


def _lock_path(index, backend: str, uri: str | None) -> Path | None:
    """The lock file of an index file or a Milvus Lite file; None for a Milvus server."""
    if backend == "faiss":
        path = Path(index)
        return path.with_name(f".{path.name}.lock")
    if uri is not None and "://" not in uri:  # Milvus Lite: a local file
        path = Path(uri)
        return path.with_name(f".{path.name}.{index}.lock")
    return None


@contextmanager
def writing(index, backend: str = "faiss", uri: str | None = None):
    """Hold the gallery's lock file while changing it: concurrent writers wait their turn.

    A Milvus server has no lock here: one writer at a time per gallery."""
    lock = _lock_path(index, backend, uri)
    if lock is None:
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def info(gallery: Gallery) -> dict:
    """What `reid index info` prints: the metadata, the location, the row count."""
    meta = dict(gallery.meta)
    where = str(gallery.path) if hasattr(gallery, "path") else gallery.location
    out = {"index": where, **meta, "count": gallery.count}
    if hasattr(gallery, "memory_bytes"):
        out["index_bytes"] = gallery.memory_bytes()
    return out


# -- add / remove ----------------------------------------------------------------------------
def add_to_index(index, features, *, backend="faiss", uri=None) -> dict:
    """See `reidcli.api.index_add`."""
    rows, stated = load_rows(features, "gallery")
    with writing(index, backend, uri):
        gallery = open_gallery(index, backend, uri)
        gallery.check_features(rows.features, str(features), stated)
        before = gallery.count
        present = gallery.ids_of(paths=rows.paths.astype(str))
        if present.size:
            log.warning("%d of the paths are already in the index: added again", present.size)
        ids = gallery.add(rows)
        gallery.save()
    return {"index": str(index), "added": len(ids), "count": gallery.count, "before": before,
            "first_id": int(ids[0]), "last_id": int(ids[-1])}  # fmt: skip


def remove_from_index(index, *, paths_file=None, pid=None, backend="faiss", uri=None) -> dict:
    """See `reidcli.api.index_remove`."""
    if (paths_file is None) == (pid is None):
        raise RecipeError("give --paths FILE or --pid N (one of them)")
    if pid is not None and pid < 0:
        raise RecipeError(f"--pid must be a person id (>= 0), got {pid}")
    wanted: list[str] = []
    if paths_file is not None:
        paths_file = Path(paths_file)
        if not paths_file.is_file():
            raise GalleryIndexError(f"{paths_file}: no such file of paths")
        text = paths_file.read_text(encoding="utf-8", errors="surrogateescape")
        wanted = [line.strip() for line in text.splitlines() if line.strip()]
    with writing(index, backend, uri):
        gallery = open_gallery(index, backend, uri)
        if pid is not None:
            ids, what = gallery.ids_of(pid=pid), f"no row of person {pid}"
        else:
            ids = gallery.ids_of(paths=wanted)
            what = f"none of the {len(wanted)} path(s) of {paths_file}"
        if ids.size == 0:
            raise GalleryIndexError(f"{what} in {index}: nothing removed")
        before = gallery.count
        result = gallery.remove(ids)
        gallery.save()
    if paths_file is not None and result["removed"] < len(set(wanted)):
        log.warning("%d of the listed paths were not in the index",
                    len(set(wanted)) - result["removed"])  # fmt: skip
    return {"index": str(index), **result, "before": before, "count": gallery.count}


# -- search ----------------------------------------------------------------------------------
def exclusion(gallery: Gallery, q_pids: np.ndarray, q_camids: np.ndarray, same_pid_only: bool):
    """keep(rows, ids): drop hits seen by the query's camera that are its identity (Market
    rule); with `same_pid_only` False, or for a query of unknown identity, every hit of its
    camera."""

    def keep(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        _, pids, camids = gallery.labels(ids)
        same_cam = camids == q_camids[rows][:, None]
        if not same_pid_only:
            return ~same_cam
        unknown = (q_pids[rows] == UNKNOWN)[:, None]
        return ~(same_cam & (unknown | (pids == q_pids[rows][:, None])))

    return keep


def search_index(
    index, queries: Rows, *, topk=10, nprobe=None, ef_search=None, exclude_same_camera=False,
    backend="faiss", uri=None, source="queries", stated=None,
) -> dict:  # fmt: skip
    """See `reidcli.api.search`."""
    if topk < 1:
        raise RecipeError(f"--topk must be >= 1, got {topk}")
    gallery = open_gallery(index, backend, uri)
    gallery.check_features(queries.features, source, stated)
    params = search_params(gallery, nprobe, ef_search)
    keep = None
    if exclude_same_camera:
        if (queries.camids == UNKNOWN).any():
            raise FeaturesError(f"{source}: --exclude-same-camera needs each query's camid")
        keep = exclusion(gallery, queries.pids, queries.camids, same_pid_only=True)
    started = time.perf_counter()
    hits = gallery.search(queries.features, topk, params, keep)
    seconds = time.perf_counter() - started
    return {"index": str(index), "kind": gallery.kind, "metric": gallery.metric, "topk": topk,
            "seconds": round(seconds, 4), "results": _results(gallery, queries, hits)}  # fmt: skip


def search_params(gallery: Gallery, nprobe, ef_search) -> SearchParams:
    if nprobe is not None and gallery.kind != "ivfpq":
        raise RecipeError(f"--nprobe applies to ivfpq indexes; this one is {gallery.kind}")
    if ef_search is not None and gallery.kind != "hnsw":
        raise RecipeError(f"--ef-search applies to hnsw indexes; this one is {gallery.kind}")
    for name, value in (("--nprobe", nprobe), ("--ef-search", ef_search)):
        if value is not None and value < 1:
            raise RecipeError(f"{name} must be >= 1, got {value}")
    nlist = gallery.meta["params"].get("nlist")
    if nprobe is not None and nprobe > nlist:
        raise RecipeError(f"--nprobe {nprobe} exceeds the index's {nlist} lists")
    return SearchParams(nprobe=nprobe, ef_search=ef_search)


def _results(gallery: Gallery, queries: Rows, hits: Hits) -> list[dict]:
    paths, pids, camids = gallery.labels(hits.ids)
    out = []
    for q in range(len(queries)):
        entry = {"path": str(queries.paths[q])}
        if queries.pids[q] != UNKNOWN:
            entry["pid"] = int(queries.pids[q])
        if queries.camids[q] != UNKNOWN:
            entry["camid"] = int(queries.camids[q])
        entry["hits"] = [
            {
                "path": str(paths[q, j]),
                "pid": int(pids[q, j]),
                "camid": int(camids[q, j]),
                "distance": float(hits.distances[q, j]),
            }
            for j in range(hits.ids.shape[1])
            if hits.ids[q, j] >= 0
        ]
        out.append(entry)
    return out


def write_results(results: list[dict], out: str | Path) -> Path:
    """`.json`: the list as printed by --json; `.csv`: one line per hit."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    elif out.suffix.lower() == ".csv":
        with out.open("w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            writer = csv.writer(handle)
            writer.writerow(["query", "rank", "path", "pid", "camid", "distance"])
            for entry in results:
                for rank, hit in enumerate(entry["hits"], 1):
                    writer.writerow([entry["path"], rank, hit["path"], hit["pid"], hit["camid"],
                                     repr(hit["distance"])])  # fmt: skip
    else:
        raise RecipeError(f"--out must end in .json or .csv, got {out.name}")
    return out


def embed_queries(model, images, device: str, reporter) -> tuple[Rows, str | None]:
    """Image queries embedded by a checkpoint or export, as `reid embed` would, and the
    distance the model's recipe evaluates with (None for an export)."""
    from reidcli.engine.embed import collect_inputs, load_runner, run_images
    from reidcli.reporting import Reporter

    items = (images,) if isinstance(images, str | Path) else tuple(images)
    runner, (batch, workers, distance) = load_runner(model, device, None, None)
    paths = collect_inputs(items)
    feats, kept, skipped = run_images(runner, paths, batch, workers, False, reporter or Reporter())
    for item in skipped:
        log.warning("skipped unreadable image: %s", item["error"])
    n = len(kept)
    unknown = np.full(n, UNKNOWN, np.int64)
    return Rows(feats, np.asarray(kept, dtype=object), unknown, unknown.copy()), distance
