"""Searchable galleries: `reid index build|add|remove|info` and `reid search`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reidcli.errors import RecipeError
from reidcli.reporting import Reporter


def index_build(
    features: str | Path,
    out: str | Path,
    *,
    kind: str = "auto",
    metric: str | None = None,
    nlist: int | None = None,
    pq_m: int | None = None,
    refine: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int | None = None,
    ef_construction: int | None = None,
    ef_search: int | None = None,
    recall_sample: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
    backend: str = "faiss",
    uri: str | None = None,
) -> dict:
    """Build a searchable gallery from a features file, storing each row's path, pid and camid.

    Args:
        features: a `reid embed` file (`features`, `paths`, optional `pids`, `camids`) or a
            `reid eval --features` file (its gallery side).
        out: the index file (faiss), or the collection name (Milvus).
        kind: "flat" (exact), "hnsw", "ivfpq", or "auto" (flat below 200,000 rows, else ivfpq).
        metric: "cosine" (1 − cos) or "euclidean" (squared L2), as `reid eval` measures;
            default the distance the features file states (`reid embed` of a checkpoint), else
            cosine.
        nlist, pq_m, refine, nprobe: IVF-PQ lists, sub-quantizers (8 bits each), R: the best
            K + (R − 1)·min(K, 10) PQ candidates are re-scored exactly (0: none, and no
            vectors kept), lists searched by default.
        hnsw_m, ef_construction, ef_search: HNSW links per node, build and search beam widths.
        recall_sample: stored rows used as queries to measure an approximate index's recall@10
            against brute force (stored in the metadata).
        seed: seed of the training sample and the recall sample.
        overwrite: replace an existing index.
        backend: "faiss" (one file; the `index` extra) or "milvus" (the `milvus` extra).
        uri: the Milvus server, or a Milvus Lite file (`gallery.db`), with backend "milvus".

    Returns:
        The index's metadata (kind, metric, dim, params, search, count, recall, build_seconds)
        with `index` (where it is) and `index_bytes` (faiss: the index as serialised).

    Raises:
        FeaturesError: an unreadable, empty or malformed features file.
        GalleryIndexError: an existing index without `overwrite`; a missing backend package.
        RecipeError: parameters that do not fit the kind or the data.
    """
    from reidcli.index.build import build_index

    return build_index(
        features, out, kind=kind, metric=metric, backend=backend, uri=uri, overwrite=overwrite,
        recall_sample=recall_sample, seed=seed, nlist=nlist, pq_m=pq_m, refine=refine,
        nprobe=nprobe, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search,
    )  # fmt: skip


def index_add(
    index: str | Path, features: str | Path, *, backend: str = "faiss", uri: str | None = None
) -> dict:
    """Add a features file's rows to a gallery under new ids; the file is rewritten atomically
    (an interrupted add leaves the previous index). Returns {"added", "count", "before", ...}.

    Raises:
        GalleryIndexError: a missing or corrupt index; features of another width or distance.
    """
    from reidcli.index.build import add_to_index

    return add_to_index(index, features, backend=backend, uri=uri)


def index_remove(
    index: str | Path,
    *,
    paths_file: str | Path | None = None,
    pid: int | None = None,
    backend: str = "faiss",
    uri: str | None = None,
) -> dict:
    """Delete a person's crops (`pid`) or listed image paths (`paths_file`, one per line).

    The rows leave the file (an HNSW graph is rebuilt without them); a search for their vectors
    afterwards must not find them, else nothing is written (faiss; Milvus deletes at once).
    Returns {"removed", "verified", "before", "count"}.

    Raises:
        GalleryIndexError: none of the rows is in the index (nothing to erase), or a removed
            row is still found.
    """
    from reidcli.index.build import remove_from_index

    return remove_from_index(index, paths_file=paths_file, pid=pid, backend=backend, uri=uri)


def index_info(index: str | Path, *, backend: str = "faiss", uri: str | None = None) -> dict:
    """A gallery's metadata: kind, metric, dim, params, count, build recall, sizes."""
    from reidcli.index.store import info, open_gallery

    return info(open_gallery(index, backend, uri))


def search(
    index: str | Path,
    queries: str | Path | Sequence[str | Path],
    *,
    model: str | Path | None = None,
    topk: int = 10,
    nprobe: int | None = None,
    ef_search: int | None = None,
    exclude_same_camera: bool = False,
    out: str | Path | None = None,
    backend: str = "faiss",
    uri: str | None = None,
    device: str = "auto",
    reporter: Reporter | None = None,
) -> dict:
    """The top-K gallery rows of each query.

    Args:
        index: the index file, or the collection name (Milvus).
        queries: a features file (`reid embed` output, or the query side of a `reid eval
            --features` file); or, with `model`, images, folders and lists to embed first.
        model: a run folder, checkpoint or export that embeds image queries.
        topk: hits per query.
        nprobe, ef_search: search breadth of an IVF-PQ / HNSW index (default: the build's).
        exclude_same_camera: drop hits of the query's identity seen by the query's camera (the
            Market-1501 rule); a query of unknown identity drops every hit of its camera.
            Enough candidates are fetched to still return `topk`.
        out: also write the results to a `.json` or `.csv` file.

    Returns:
        {"index", "kind", "metric", "topk", "seconds", "results": [{"path", "pid"?, "camid"?,
        "hits": [{"path", "pid", "camid", "distance"}, ...]}, ...]} (pid/camid -1: unknown).
    """
    from reidcli.index.inputs import load_rows
    from reidcli.index.search import check_results_path, search_index, write_results

    if out is not None:
        check_results_path(out)
    if model is not None:
        from reidcli.index.inputs import embed_queries

        rows, stated = embed_queries(model, queries, device, reporter)
        source = "images"
    else:
        if not isinstance(queries, str | Path):
            raise RecipeError("give one features file, or images with a model")
        rows, stated = load_rows(queries, "query")
        source = str(queries)
    result = search_index(
        index, rows, topk=topk, nprobe=nprobe, ef_search=ef_search,
        exclude_same_camera=exclude_same_camera, backend=backend, uri=uri, source=source,
        stated=stated,
    )  # fmt: skip
    if out is not None:
        result["out"] = str(write_results(result["results"], out))
    return result
