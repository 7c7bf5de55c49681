"""Rendering of evaluation results: rich tables on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from reidcli.cli.options import print_json
from reidcli.results import EvalResult, Metrics, OpenSetResult

ROWS = (
    ("rank-1", "rank1"),
    ("rank-5", "rank5"),
    ("rank-10", "rank10"),
    ("rank-20", "rank20"),
    ("mAP", "mAP"),
    ("mINP", "mINP"),
)


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def metrics_table(columns: list[tuple[str, Metrics]], title: str = "evaluation") -> Table:
    """A table of CMC ranks, mAP, mINP and query counts, a column per ranking."""
    table = Table(title=title)
    table.add_column("metric (%)")
    for name, _ in columns:
        table.add_column(name or "value", justify="right")
    for label, key in ROWS:
        table.add_row(label, *(_pct(getattr(m, key)) for _, m in columns))
    table.add_row("queries used", *(str(m.num_query) for _, m in columns))
    table.add_row("queries skipped", *(str(m.num_skipped) for _, m in columns))
    return table


def camera_table(final: Metrics, reranked: bool) -> Table | None:
    """Per-query-camera rank-1 / mAP / mINP (of the final ranking), or None if absent."""
    if not final.per_camera:
        return None
    table = Table(title="per query camera" + (" (re-ranked)" if reranked else ""))
    for name in ("camera", "queries", "skipped", "rank-1", "mAP", "mINP"):
        table.add_column(name, justify="right")
    for cam, m in final.per_camera.items():
        table.add_row(
            cam, str(m.num_query), str(m.num_skipped), _pct(m.rank1), _pct(m.mAP), _pct(m.mINP)
        )
    return table


def render_metrics(
    metrics: Metrics,
    reranked: Metrics | None = None,
    console: Console | None = None,
    title: str = "evaluation",
) -> None:
    """Print the metrics (and per-camera breakdown) as rich tables, on stderr by default."""
    console = console or Console(stderr=True)
    subtitle = f"distance {metrics.distance or '?'}, protocol {metrics.protocol or '?'}"
    columns = [("", metrics)]
    if reranked is not None:
        p = reranked.rerank_params
        subtitle += f"; re-ranking k1={p.get('k1')} k2={p.get('k2')} λ={p.get('lambda')}"
        columns = [("before", metrics), ("re-ranked", reranked)]
    table = metrics_table(columns, title)
    table.caption = subtitle
    console.print(table)
    cams = camera_table(reranked or metrics, reranked is not None)
    if cams is not None:
        console.print(cams)


def render_result(result: EvalResult, as_json: bool, title: str) -> None:
    """Tables on stderr; with `as_json`, the documented JSON document on stdout."""
    render_metrics(result.metrics, result.reranked, title=title)
    if as_json:
        print_json(result.to_json())


def render_open_set(result: OpenSetResult, console: Console | None = None) -> None:
    """The open-set figures: DIR and unknown rejection at each threshold."""
    console = console or Console(stderr=True)
    table = Table(
        title=f"open set: {result.unknown_ids} query identities withheld (seed {result.seed})"
    )
    for name in ("FAR", "threshold", "DIR %", "unknown rejected %"):
        table.add_column(name, justify="right")
    for level in result.thresholds:
        table.add_row(f"{level.far:g}", f"{level.threshold:.4f}", _pct(level.dir),
                      _pct(level.unknown_rejected))  # fmt: skip
    if result.calibration:
        source = f"from {result.calibration} (FAR of pairs)"
    else:
        source = "set on the unknown queries (FAR: share of them accepted; optimistic)"
    caption = (
        f"{result.known_queries} known and {result.unknown_queries} unknown queries, "
        f"{result.gallery_rows} gallery rows; rank-1 of the known queries "
        f"{_pct(result.rank1_known)}%; thresholds: {source}"
    )
    if result.fars_not_measurable:
        left = ", ".join(f"{f:g}" for f in result.fars_not_measurable)
        caption += f"; FAR {left} not measurable on {result.unknown_queries} unknown queries"
    table.caption = caption
    console.print(table)
