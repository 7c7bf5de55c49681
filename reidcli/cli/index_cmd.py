"""`reid index build|add|remove|info` and `reid search`: galleries on faiss files or Milvus."""

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from reidcli.cli.eval_cmd import Device

index_app = typer.Typer(
    help="Build, grow and prune searchable galleries (faiss files, or Milvus).",
    no_args_is_help=True,
)

Kind = StrEnum("Kind", {name: name for name in ("auto", "flat", "hnsw", "ivfpq")})
Metric = StrEnum("Metric", {name: name for name in ("cosine", "euclidean")})
Backend = StrEnum("Backend", {name: name for name in ("faiss", "milvus")})

SCALE = "Milvus"
APPROX = "Approximate indexes"


def _index_arg():
    return typer.Argument(..., help="Index file (faiss), or collection name with --backend milvus.")


def _backend_option():
    return typer.Option(
        Backend.faiss, "--backend", help="faiss: one local file; milvus: a collection at --uri.",
        rich_help_panel=SCALE,
    )  # fmt: skip


def _uri_option():
    return typer.Option(
        None, "--uri", help="Milvus server (http://host:19530) or Milvus Lite file (gallery.db).",
        rich_help_panel=SCALE,
    )  # fmt: skip


def _json_option():
    return typer.Option(False, "--json", help="Print one JSON document on stdout.")


def _emit(doc: dict, as_json: bool, summary: str) -> None:
    print(summary, file=sys.stderr)
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def _describe(info: dict) -> str:
    recall = info.get("recall") or {}
    text = (
        f"{info['index']}: {info['kind']} ({info['metric']}, {info['dim']}-d), {info['count']} rows"
    )
    if recall.get("recall_at_10") is not None:
        text += (
            f"; recall@10 {recall['recall_at_10']:.4f} against exact on {recall['sample']} "
            f"stored rows (search {recall['search']})"
        )
    elif info["kind"] == "flat":
        text += "; exact"
    return text


@index_app.command("build")
def build_cmd(
    features: Path = typer.Argument(
        ..., help="`reid embed` file, or a `reid eval --features` file (its gallery)."
    ),
    out: str = typer.Option(..., "--out", help="Index file to write (collection name: Milvus)."),
    kind: Kind = typer.Option(
        Kind.auto, "--type", help="flat (exact), hnsw, ivfpq; auto: flat below 200,000 rows."
    ),
    metric: Metric | None = typer.Option(
        None,
        "--metric",
        help="cosine or euclidean (default: the file's stated distance, or cosine).",
    ),
    nlist: int | None = typer.Option(
        None, "--nlist", help="IVF lists (default ≈ 4·√N).", rich_help_panel=APPROX
    ),
    pq_m: int | None = typer.Option(
        None, "--pq-m", help="PQ sub-quantizers (default D/8).", rich_help_panel=APPROX
    ),
    refine: int | None = typer.Option(
        None,
        "--refine",
        help="IVF-PQ: the first 10 hits are chosen among R times as many candidates, re-scored "
        "exactly (default 10; 0: PQ distances, no vectors kept).",
        rich_help_panel=APPROX,
    ),
    nprobe: int | None = typer.Option(
        None,
        "--nprobe",
        help="IVF-PQ lists searched by default (nlist/8).",
        rich_help_panel=APPROX,
    ),
    hnsw_m: int | None = typer.Option(
        None, "--hnsw-m", help="HNSW links per node (default 32).", rich_help_panel=APPROX
    ),
    ef_construction: int | None = typer.Option(
        None, "--ef-construction", help="HNSW build beam (default 80).", rich_help_panel=APPROX
    ),
    ef_search: int | None = typer.Option(
        None, "--ef-search", help="HNSW search beam by default (64).", rich_help_panel=APPROX
    ),
    recall_sample: int = typer.Option(
        1000, "--recall-sample", min=1, help="Stored rows used to measure recall@10."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of training and recall samples."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index."),
    backend: Backend = _backend_option(),
    uri: str | None = _uri_option(),
    as_json: bool = _json_option(),
) -> None:
    """Build an index from a features file; approximate ones report their measured recall."""
    from reidcli import api

    info = api.index_build(
        features, out, kind=kind.value, metric=metric.value if metric else None, nlist=nlist,
        pq_m=pq_m, refine=refine, nprobe=nprobe, hnsw_m=hnsw_m, ef_construction=ef_construction,
        ef_search=ef_search, recall_sample=recall_sample, seed=seed, overwrite=overwrite,
        backend=backend.value, uri=uri,
    )  # fmt: skip
    _emit(info, as_json, f"built {_describe(info)} in {info['build_seconds']:.1f}s")


@index_app.command("add")
def add_cmd(
    index: str = _index_arg(),
    features: Path = typer.Argument(..., help="Features file with the rows to add."),
    backend: Backend = _backend_option(),
    uri: str | None = _uri_option(),
    as_json: bool = _json_option(),
) -> None:
    """Add rows without rebuilding (a faiss file is replaced atomically)."""
    from reidcli import api

    result = api.index_add(index, features, backend=backend.value, uri=uri)
    _emit(result, as_json, f"added {result['added']} rows: {result['count']} in {index}")


@index_app.command("remove")
def remove_cmd(
    index: str = _index_arg(),
    paths: Path | None = typer.Option(
        None, "--paths", help="Text file of image paths to delete, one per line."
    ),
    pid: int | None = typer.Option(None, "--pid", help="Delete every crop of this person."),
    backend: Backend = _backend_option(),
    uri: str | None = _uri_option(),
    as_json: bool = _json_option(),
) -> None:
    """Delete crops (right to erasure); a search afterwards verifies they are gone."""
    from reidcli import api

    result = api.index_remove(index, paths_file=paths, pid=pid, backend=backend.value, uri=uri)
    summary = f"removed {result['removed']} rows ({result['count']} left in {index})"
    if result["removed"]:
        summary += "; verified: a search no longer finds them"
    _emit(result, as_json, summary)


@index_app.command("info")
def info_cmd(
    index: str = _index_arg(),
    backend: Backend = _backend_option(),
    uri: str | None = _uri_option(),
    as_json: bool = _json_option(),
) -> None:
    """Kind, metric, size, parameters and build recall of an index."""
    from reidcli import api

    info = api.index_info(index, backend=backend.value, uri=uri)
    _emit(info, as_json, _describe(info))


def search_cmd(
    index: str = _index_arg(),
    queries: list[Path] = typer.Argument(
        ..., help="Features file; or images, folders and lists with --model."
    ),
    model: Path | None = typer.Option(
        None, "--model", help="Run folder, checkpoint or export that embeds image queries."
    ),
    topk: int = typer.Option(10, "--topk", min=1, help="Hits per query."),
    nprobe: int | None = typer.Option(None, "--nprobe", min=1, help="IVF-PQ lists searched."),
    ef_search: int | None = typer.Option(None, "--ef-search", min=1, help="HNSW search beam."),
    exclude_same_camera: bool = typer.Option(
        False,
        "--exclude-same-camera",
        help="Drop hits of the query's identity from the query's camera (Market-1501 rule); "
        "a query without a known identity drops every hit of its camera. Needs each query's "
        "camid (a features file with camids).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the results (.json or .csv)."),
    device: Device = typer.Option("auto", "--device", help="Where --model runs."),
    backend: Backend = _backend_option(),
    uri: str | None = _uri_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the results: one entry per query, with its hits."
    ),
) -> None:
    """Top-K gallery paths, pids, camids and distances for each query."""
    from reidcli import api
    from reidcli.errors import RecipeError
    from reidcli.reporting import console_reporter

    if model is None and len(queries) != 1:
        raise RecipeError("give one features file, or images with --model")
    result = api.search(
        index, queries[0] if model is None else tuple(queries), model=model, topk=topk,
        nprobe=nprobe, ef_search=ef_search, exclude_same_camera=exclude_same_camera, out=out,
        backend=backend.value, uri=uri, device=device.value, reporter=console_reporter(quiet),
    )  # fmt: skip
    if not quiet:
        _table(result)
        if out is not None:
            print(f"wrote {result['out']}", file=sys.stderr)
    if as_json:
        sys.stdout.write(json.dumps(result["results"], indent=2) + "\n")


SHOWN = 5


def _table(result: dict) -> None:
    table = Table(title=f"top-{result['topk']} in {result['index']} ({result['kind']})")
    for name in ("query", "rank", "path", "pid", "camid", "distance"):
        table.add_column(name, justify="left" if name in ("query", "path") else "right")
    for entry in result["results"][:SHOWN]:
        for rank, hit in enumerate(entry["hits"], 1):
            table.add_row(
                entry["path"] if rank == 1 else "", str(rank), hit["path"], str(hit["pid"]),
                str(hit["camid"]), f"{hit['distance']:.4f}",
            )  # fmt: skip
    console = Console(stderr=True)
    console.print(table)
    more = len(result["results"]) - SHOWN
    if more > 0:
        console.print(f"... and {more} more queries (--json or --out for all)")
