"""`reid index build|add|remove|compact|rebuild|upgrade|calibrate|info` and `reid search`:
galleries in faiss index folders or Milvus."""

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from reidcli.cli.options import build, choices, json_option, option, print_json, quiet_option
from reidcli.recipe.options import (
    GalleryAt,
    IndexAddOptions,
    IndexBuildOptions,
    IndexRebuildOptions,
    IndexRemoveOptions,
    SearchOptions,
)

index_app = typer.Typer(
    help="Build, grow, prune and compact searchable galleries (faiss index folders, or Milvus).",
    no_args_is_help=True,
)

Kind = choices(IndexBuildOptions, "kind")
Metric = choices(IndexBuildOptions, "metric")
Backend = choices(GalleryAt, "backend")
Device = choices(SearchOptions, "device")

SCALE = "Milvus"
APPROX = "Approximate indexes"
# Field paths whose flags are not named after the field.
BUILD_FLAGS = {
    "kind": "--type", "hnsw.m": "--hnsw-m", "hnsw.ef_construction": "--ef-construction",
    "hnsw.ef_search": "--ef-search", "ivfpq.nlist": "--nlist", "ivfpq.pq_m": "--pq-m",
    "ivfpq.refine": "--refine", "ivfpq.nprobe": "--nprobe",
}  # fmt: skip
REMOVE_FLAGS = {"paths_file": "--paths"}


def _index_arg():
    return typer.Argument(
        ..., help="Index folder (faiss), or collection name with --backend milvus."
    )


def _backend_option():
    return option(GalleryAt, "backend", "--backend", rich_help_panel=SCALE)


def _uri_option():
    return option(GalleryAt, "uri", "--uri", rich_help_panel=SCALE)


def _emit(result, as_json: bool, summary: str) -> None:
    print(summary, file=sys.stderr)
    if as_json:
        print_json(result.to_json())


def _describe(info) -> str:
    text = f"{info.index}: {info.kind} ({info.metric}, {info.dim}-d), {info.count} rows"
    if info.recall_at_10 is not None:
        text += (
            f"; recall@10 {info.recall_at_10:.4f} against exact on {info.recall_sample} "
            f"stored rows (search {info.search})"
        )
    elif info.kind == "flat":
        text += "; exact"
    doc = info.document
    if "segments" in doc:
        text += (
            f"; {len(doc['segments'])} segment(s), {doc['deleted']} deleted rows not yet "
            f"compacted, {doc['bytes_on_disk'] / 1e6:.1f} MB on disk"
        )
    calibration = info.calibration
    if calibration is not None:
        levels = ", ".join(f"FAR {t.far:g} < {t.threshold:.4f}" for t in calibration.thresholds)
        text += f"; calibrated thresholds: {levels}"
    return text


@index_app.command("build")
def build_cmd(
    features: Path = typer.Argument(
        ..., help="`reid embed` file, or a `reid eval --features` file (its gallery)."
    ),
    out: str = typer.Option(..., "--out", help="Index folder to write (collection name: Milvus)."),
    kind: Kind | None = option(IndexBuildOptions, "kind", "--type"),
    metric: Metric | None = option(IndexBuildOptions, "metric", "--metric"),
    nlist: int | None = option(IndexBuildOptions, "ivfpq.nlist", "--nlist", rich_help_panel=APPROX),
    pq_m: int | None = option(IndexBuildOptions, "ivfpq.pq_m", "--pq-m", rich_help_panel=APPROX),
    refine: int | None = option(
        IndexBuildOptions, "ivfpq.refine", "--refine", rich_help_panel=APPROX
    ),
    nprobe: int | None = option(
        IndexBuildOptions, "ivfpq.nprobe", "--nprobe", rich_help_panel=APPROX
    ),
    hnsw_m: int | None = option(IndexBuildOptions, "hnsw.m", "--hnsw-m", rich_help_panel=APPROX),
    ef_construction: int | None = option(
        IndexBuildOptions, "hnsw.ef_construction", "--ef-construction", rich_help_panel=APPROX
    ),
    ef_search: int | None = option(
        IndexBuildOptions, "hnsw.ef_search", "--ef-search", rich_help_panel=APPROX
    ),
    recall_sample: int | None = option(IndexBuildOptions, "recall_sample", "--recall-sample"),
    seed: int | None = option(IndexBuildOptions, "seed", "--seed"),
    overwrite: bool | None = option(IndexBuildOptions, "overwrite", "--overwrite/--no-overwrite"),
    calibration: Path | None = option(IndexBuildOptions, "calibration", "--calibration"),
    max_segments: int | None = option(IndexBuildOptions, "max_segments", "--max-segments"),
    max_deleted: float | None = option(IndexBuildOptions, "max_deleted", "--max-deleted"),
    backend: Backend | None = _backend_option(),
    uri: str | None = _uri_option(),
    as_json: bool = json_option(),
) -> None:
    """Build an index from a features file; approximate ones report their measured recall."""
    from reidcli import api

    given = {
        "kind": kind, "metric": metric, "ivfpq.nlist": nlist, "ivfpq.pq_m": pq_m,
        "ivfpq.refine": refine, "ivfpq.nprobe": nprobe, "hnsw.m": hnsw_m,
        "hnsw.ef_construction": ef_construction, "hnsw.ef_search": ef_search,
        "recall_sample": recall_sample, "seed": seed, "overwrite": overwrite, "backend": backend,
        "uri": uri, "calibration": calibration, "max_segments": max_segments,
        "max_deleted": max_deleted,
    }  # fmt: skip
    info = api.index_build(features, out, build(IndexBuildOptions, given, BUILD_FLAGS))
    _emit(info, as_json, f"built {_describe(info)} in {info.build_seconds:.1f}s")


def _compactions(lines: list) -> str:
    return "".join(f"\ncompacted {line}" for line in lines)


@index_app.command("add")
def add_cmd(
    index: str = _index_arg(),
    features: Path = typer.Argument(
        ..., help="Features file with the rows to add, or the --out folder of a sharded reid embed."
    ),
    replace: bool | None = option(IndexAddOptions, "replace", "--replace/--no-replace"),
    backend: Backend | None = _backend_option(),
    uri: str | None = _uri_option(),
    as_json: bool = json_option(),
) -> None:
    """Add rows as a new segment: nothing already written is rewritten."""
    from reidcli import api

    given = {"replace": replace, "backend": backend, "uri": uri}
    result = api.index_add(index, features, build(IndexAddOptions, given))
    summary = f"added {result.added} rows: {result.count} in {index}"
    if result.replaced:
        summary += f" ({result.replaced} of them replaced stored rows of the same paths)"
    _emit(result, as_json, summary + _compactions(result.compacted))


@index_app.command("remove")
def remove_cmd(
    index: str = _index_arg(),
    paths: Path | None = option(IndexRemoveOptions, "paths_file", "--paths"),
    pid: int | None = option(IndexRemoveOptions, "pid", "--pid"),
    purge: bool | None = option(IndexRemoveOptions, "purge", "--purge/--no-purge"),
    backend: Backend | None = _backend_option(),
    uri: str | None = _uri_option(),
    as_json: bool = json_option(),
) -> None:
    """Delete crops (right to erasure); a search afterwards verifies they are gone."""
    from reidcli import api

    given = {"paths_file": paths, "pid": pid, "purge": purge, "backend": backend, "uri": uri}
    result = api.index_remove(index, build(IndexRemoveOptions, given, REMOVE_FLAGS))
    summary = f"removed {result.removed} rows ({result.count} left in {index})"
    if result.removed:
        summary += "; verified: a search no longer finds them"
    if result.purged:
        summary += (
            f"\npurged: {len(result.purged)} segment file(s) rewritten without the deleted rows "
            "and the files that held them deleted; no file of the index contains them now "
            "(copies outside it, such as backups or filesystem snapshots, are not reid's to erase)"
        )
    elif result.removed and (backend or "faiss") == "faiss":
        summary += (
            "\ntheir bytes stay in the index's segment files until compaction: pass --purge "
            "(or run reid index compact) to rewrite those files without them"
        )
    _emit(result, as_json, summary + _compactions(result.compacted))


@index_app.command("compact")
def compact_cmd(
    index: str = _index_arg(),
    as_json: bool = json_option(),
) -> None:
    """Merge every segment into one and drop deleted rows (searches meanwhile keep working)."""
    from reidcli import api

    result = api.index_compact(index)
    _emit(result, as_json, (
        f"compacted {index}: {result.segments_before} segment(s) -> {result.segments_after}, "
        f"{result.deleted_dropped} deleted rows dropped, {result.bytes_before / 1e6:.1f} MB -> "
        f"{result.bytes_after / 1e6:.1f} MB on disk in {result.seconds:.1f}s"
    ))  # fmt: skip


@index_app.command("rebuild")
def rebuild_cmd(
    index: str = _index_arg(),
    nlist: int | None = option(IndexRebuildOptions, "nlist", "--nlist"),
    dry_run: bool | None = option(IndexRebuildOptions, "dry_run", "--dry-run/--write"),
    recall_sample: int | None = option(IndexRebuildOptions, "recall_sample", "--recall-sample"),
    seed: int | None = option(IndexRebuildOptions, "seed", "--seed"),
    as_json: bool = json_option(),
) -> None:
    """Train an IVF-PQ quantizer again on the rows the index holds now; recall before and after."""
    from reidcli import api

    given = {"nlist": nlist, "dry_run": dry_run, "recall_sample": recall_sample, "seed": seed}
    result = api.index_rebuild(index, build(IndexRebuildOptions, given))
    verb = "rebuilt" if result.written else "would rebuild (--dry-run: nothing written)"
    _emit(result, as_json, (
        f"{verb} {index}: {result.count} rows; quantizer trained on {result.trained_before} rows "
        f"with {result.nlist_before} lists -> {result.trained_after} rows with "
        f"{result.nlist_after} lists; recall@10 {result.recall_before} -> {result.recall_after}"
    ))  # fmt: skip


@index_app.command("upgrade")
def upgrade_cmd(
    index: Path = typer.Argument(..., help="Index file of the single-file format."),
    as_json: bool = json_option(),
) -> None:
    """Convert an index file of earlier reid versions into an index folder at the same path."""
    from reidcli import api

    result = api.index_upgrade(index)
    _emit(result, as_json, (
        f"upgraded {result.index}: {result.kind}, {result.count} rows, now an index folder; "
        f"the old file is kept as {result.kept}"
    ))  # fmt: skip


@index_app.command("calibrate")
def calibrate_cmd(
    index: str = _index_arg(),
    calibration: Path = typer.Argument(
        ..., help="Calibration file (reid calibrate) of the model whose features the index holds."
    ),
    backend: Backend | None = _backend_option(),
    uri: str | None = _uri_option(),
    as_json: bool = json_option(),
) -> None:
    """Keep a calibration with the index, for `reid search --threshold far=F`."""
    from reidcli import api

    at = build(GalleryAt, {"backend": backend, "uri": uri})
    info = api.index_calibrate(index, calibration, at)
    _emit(info, as_json, _describe(info))


@index_app.command("info")
def info_cmd(
    index: str = _index_arg(),
    backend: Backend | None = _backend_option(),
    uri: str | None = _uri_option(),
    as_json: bool = json_option(),
) -> None:
    """Kind, metric, size, parameters and build recall of an index."""
    from reidcli import api

    info = api.index_info(index, build(GalleryAt, {"backend": backend, "uri": uri}))
    _emit(info, as_json, _describe(info))


def search_cmd(
    index: str = _index_arg(),
    queries: list[Path] = typer.Argument(
        ..., help="Features file; or images, folders and lists with --model."
    ),
    model: Path | None = option(SearchOptions, "model", "--model"),
    topk: int | None = option(SearchOptions, "topk", "--topk"),
    nprobe: int | None = option(SearchOptions, "nprobe", "--nprobe"),
    ef_search: int | None = option(SearchOptions, "ef_search", "--ef-search"),
    exclude_same_camera: bool | None = option(
        SearchOptions, "exclude_same_camera", "--exclude-same-camera/--no-exclude-same-camera"
    ),
    out: Path | None = option(SearchOptions, "out", "--out"),
    device: Device | None = option(SearchOptions, "device", "--device"),
    threshold: str | None = option(SearchOptions, "threshold", "--threshold"),
    calibration: Path | None = option(SearchOptions, "calibration", "--calibration"),
    matches_only: bool | None = option(SearchOptions, "matches_only", "--matches-only"),
    backend: Backend | None = _backend_option(),
    uri: str | None = _uri_option(),
    quiet: bool = quiet_option(),
    as_json: bool = typer.Option(
        False, "--json", help="Print the results: one entry per query, with its hits."
    ),
) -> None:
    """Top-K gallery paths, pids, camids and distances for each query."""
    from reidcli import api
    from reidcli.errors import UsageError
    from reidcli.reporting import console_reporter

    if model is None and len(queries) != 1:
        raise UsageError("give one features file, or images with --model")
    given = {
        "model": model, "topk": topk, "nprobe": nprobe, "ef_search": ef_search,
        "exclude_same_camera": exclude_same_camera, "out": out, "device": device,
        "backend": backend, "uri": uri, "threshold": threshold, "calibration": calibration,
        "matches_only": matches_only,
    }  # fmt: skip
    options = build(SearchOptions, given)
    result = api.search(
        index, queries[0] if model is None else tuple(queries), options,
        reporter=console_reporter(quiet),
    )  # fmt: skip
    if not quiet:
        _table(result)
        if result.out is not None:
            print(f"wrote {result.out}", file=sys.stderr)
    if as_json:
        print_json([entry.to_json() for entry in result.results])


SHOWN = 5


def _table(result) -> None:
    table = Table(title=f"top-{result.topk} in {result.index} ({result.kind})")
    marked = result.threshold is not None
    names = ("query", "rank", "path", "pid", "camid", "distance") + (("match",) if marked else ())
    for name in names:
        table.add_column(name, justify="left" if name in ("query", "path") else "right")
    for entry in result.results[:SHOWN]:
        for rank, hit in enumerate(entry.hits, 1):
            table.add_row(
                entry.path if rank == 1 else "", str(rank), hit.path, str(hit.pid),
                str(hit.camid), f"{hit.distance:.4f}",
                *(("yes" if hit.match else "no",) if marked else ()),
            )  # fmt: skip
        if marked and not entry.hits:
            table.add_row(entry.path, "", "(no match)", "", "", "", "")
    console = Console(stderr=True)
    console.print(table)
    more = len(result.results) - SHOWN
    if more > 0:
        console.print(f"... and {more} more queries (--json or --out for all)")
    if marked:
        t = result.threshold
        far = f" (calibrated for FAR {t.far:g}, {t.source})" if t.far is not None else ""
        found = sum(bool(entry.found) for entry in result.results)
        console.print(
            f"same person when distance < {t.distance:.4f}{far}: {found} of "
            f"{len(result.results)} queries found in the gallery"
        )
