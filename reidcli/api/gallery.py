"""Searchable galleries: `reid index build|add|remove|compact|rebuild|upgrade|calibrate|info` and
`reid search`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reidcli.recipe.options import (
    GalleryAt,
    IndexAddOptions,
    IndexBuildOptions,
    IndexRebuildOptions,
    IndexRemoveOptions,
    SearchOptions,
)
from reidcli.reporting import Reporter
from reidcli.results import (
    IndexAddResult,
    IndexCompactResult,
    IndexInfo,
    IndexRebuildResult,
    IndexRemoveResult,
    IndexUpgradeResult,
    SearchResult,
)

# Keyword shorthands of `index_build` for the parameters of one kind of index.
KIND_PARAMETERS = {
    "hnsw_m": ("hnsw", "m"), "ef_construction": ("hnsw", "ef_construction"),
    "ef_search": ("hnsw", "ef_search"), "nlist": ("ivfpq", "nlist"), "pq_m": ("ivfpq", "pq_m"),
    "refine": ("ivfpq", "refine"), "nprobe": ("ivfpq", "nprobe"),
}  # fmt: skip


def index_build(
    features: str | Path, out: str | Path, options: IndexBuildOptions | None = None, **fields: Any
) -> IndexInfo:
    """Build a searchable gallery from a features file, storing each row's path, pid and camid
    (and the checkpoint the file records, and `options.calibration` when given).

    Args:
        features: a `reid embed` file (`features`, `paths`, optional `pids`, `camids`) or a
            `reid eval --features` file (its gallery side).
        out: the index folder (faiss), or the collection name (Milvus).
        options: an `IndexBuildOptions` (kind, metric, hnsw/ivfpq parameters, recall_sample,
            seed, overwrite, max_segments, max_deleted, backend and uri), or its fields as
            keyword arguments (the kinds' parameters also flat: hnsw_m, ef_construction,
            ef_search, nlist, pq_m, refine, nprobe). A flat index
            is exact; approximate ones measure their recall@10 against brute force on
            `recall_sample` stored rows (kept in the metadata).

    Returns:
        The index's metadata (`document`: kind, metric, dim, params, search, count, recall,
        build_seconds, index, index_bytes).

    Raises:
        FeaturesError: an unreadable, empty or malformed features file.
        GalleryIndexError: a missing backend package. OutputError: an existing index without
            `overwrite`. RecipeError: parameters that do not fit the kind or the data.
    """
    from reidcli.verbs.index import build_index

    for flat, (section, name) in KIND_PARAMETERS.items():  # hnsw_m=... is hnsw={"m": ...}
        if flat in fields:
            fields.setdefault(section, {})[name] = fields.pop(flat)
    return build_index(features, out, IndexBuildOptions.resolve(options, fields))


def index_add(
    index: str | Path, features: str | Path, options: IndexAddOptions | None = None, **fields: Any
) -> IndexAddResult:
    """Add a features file's rows to a gallery under new ids.

    A faiss index writes them as one new segment (each part of a sharded `reid embed` folder as
    its own segment, all in one step) and a new manifest; nothing written before is rewritten,
    unless the segments pass the index's compaction thresholds. An interrupted add leaves the
    previous index.

    Args:
        features: a features file, or the `--out` folder of a sharded `reid embed`.
        options: an `IndexAddOptions` (replace, backend, uri) or its fields.

    Raises:
        GalleryIndexError: a missing or corrupt index; features of another width, distance or
            checkpoint; paths already in the index without `replace` (the count and the first
            few are named; nothing is added).
    """
    from reidcli.verbs.index import add_to_index

    return add_to_index(index, features, IndexAddOptions.resolve(options, fields))


def index_remove(
    index: str | Path, options: IndexRemoveOptions | None = None, **fields: Any
) -> IndexRemoveResult:
    """Delete a person's crops (`pid`) or listed image paths (`paths_file`, one per line).

    A faiss index records them in deletion lists at once (a search for their vectors afterwards
    must not find them, else nothing is written); their bytes stay in the segment files until
    compaction, or `purge` rewrites those files without them. Milvus deletes them at once and
    drops them from its files when it compacts. Every listed path must be there (in any
    spelling of it), else nothing is removed.

    Raises:
        GalleryIndexError: a listed path or the person is not in the index (nothing removed),
            or a removed row is still found.
    """
    from reidcli.verbs.index import remove_from_index

    return remove_from_index(index, IndexRemoveOptions.resolve(options, fields))


def index_compact(
    index: str | Path, options: GalleryAt | None = None, **fields: Any
) -> IndexCompactResult:
    """Merge a faiss index's segments into one and drop its deleted rows (`reid index compact`).

    Searches in other processes meanwhile answer from the index before or after it.
    """
    from reidcli.verbs.index_upkeep import compact_index

    return compact_index(index, GalleryAt.resolve(options, fields))


def index_rebuild(
    index: str | Path, options: IndexRebuildOptions | None = None, **fields: Any
) -> IndexRebuildResult:
    """Train an IVF-PQ index's quantizer again on the rows it holds now (its segments share the
    quantizer of its first build), measuring recall@10 before and after; `dry_run` writes
    nothing.

    Raises:
        GalleryIndexError: not IVF-PQ, or one that keeps no float32 rows (refine 0).
    """
    from reidcli.verbs.index_upkeep import rebuild_index

    return rebuild_index(index, IndexRebuildOptions.resolve(options, fields))


def index_upgrade(index: str | Path) -> IndexUpgradeResult:
    """Convert an index file of the earlier single-file format into an index folder at the same
    path (every row id, label, vector and code kept; the old file stays as `INDEX.v1`)."""
    from reidcli.verbs.index_upkeep import upgrade_index

    return upgrade_index(index)


def index_calibrate(
    index: str | Path, calibration: str | Path, options: GalleryAt | None = None, **fields: Any
) -> IndexInfo:
    """Keep a calibration (`reid calibrate`) with a gallery, for `search(threshold="far=F")`.

    Raises:
        CalibrationError: a calibration of another embedding width, distance or checkpoint.
    """
    from reidcli.verbs.index import calibrate_index

    return calibrate_index(index, calibration, GalleryAt.resolve(options, fields))


def index_info(index: str | Path, options: GalleryAt | None = None, **fields: Any) -> IndexInfo:
    """A gallery's metadata: kind, metric, dim, params, count, build recall, sizes."""
    from reidcli.index.store import info, open_gallery

    at = GalleryAt.resolve(options, fields)
    return IndexInfo.from_document(info(open_gallery(index, at.backend, at.uri)))


def search(
    index: str | Path,
    queries: str | Path | Sequence[str | Path],
    options: SearchOptions | None = None,
    *,
    reporter: Reporter | None = None,
    **fields: Any,
) -> SearchResult:
    """The top-K gallery rows of each query.

    Args:
        index: the index folder, or the collection name (Milvus).
        queries: a features file (`reid embed` output, or the query side of a `reid eval
            --features` file); or, with `options.model`, images, folders and lists to embed.
        options: a `SearchOptions` (model, topk, nprobe/ef_search, exclude_same_camera, out,
            backend, uri, device, threshold, calibration, matches_only), or its fields as
            keyword arguments. `threshold` is "far=F" (the threshold the index's calibration,
            or `calibration`, gives false-match rate F) or a distance.
        reporter: progress of embedding image queries (silent when None).

    Returns:
        One entry per query (`results`: path, pid/camid when known, hits with their path, pid,
        camid and distance, nearest first; pid/camid -1 for rows without them). With a
        threshold, each hit's `match` (distance below it), each query's `found` (its nearest
        hit matches) and `result.threshold` (distance, far, tar, source).

    Raises:
        CalibrationError: far=F without a calibration, with one that lacks F, or with one made
            for another model.
    """
    from reidcli.verbs.search import search as run

    return run(index, queries, SearchOptions.resolve(options, fields), reporter or Reporter())
