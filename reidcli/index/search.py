"""`reid search`: top-K hits per query, exclusion after the search, results files."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from reidcli.errors import FeaturesError, RecipeError
from reidcli.index.gallery import UNKNOWN, Gallery, Hits, Rows, SearchParams
from reidcli.index.store import open_gallery
from reidcli.outputs import atomic_path, check_output_file


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
        if value is not None and not 1 <= value <= 1 << 16:
            raise RecipeError(f"{name} must be in 1..{1 << 16}, got {value}")
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


def check_results_path(out: str | Path) -> Path:
    """A results file path: `.json` or `.csv`, not a folder.

    Raises:
        RecipeError: another suffix. OutputError: a folder.
    """
    out = check_output_file(out, "results file")
    if out.suffix.lower() not in (".json", ".csv"):
        raise RecipeError(f"--out must end in .json or .csv, got {out.name}")
    return out


def write_results(results: list[dict], out: str | Path) -> Path:
    """`.json`: the list as printed by --json; `.csv`: one line per hit."""
    out = check_results_path(out)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".json":
            tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
            return out
        with tmp.open("w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            writer = csv.writer(handle)
            writer.writerow(["query", "rank", "path", "pid", "camid", "distance"])
            for entry in results:
                for rank, hit in enumerate(entry["hits"], 1):
                    writer.writerow([entry["path"], rank, hit["path"], hit["pid"], hit["camid"],
                                     repr(hit["distance"])])  # fmt: skip
    return out
