"""Rendering of evaluation results: rich tables on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

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


def metrics_table(metrics: dict, title: str = "evaluation") -> Table:
    """A table of CMC ranks, mAP, mINP and query counts; a second column when re-ranked."""
    columns = [("", metrics)]
    if "reranked" in metrics:
        columns = [("before", metrics), ("re-ranked", metrics["reranked"])]
    table = Table(title=title)
    table.add_column("metric (%)")
    for name, _ in columns:
        table.add_column(name or "value", justify="right")
    for label, key in ROWS:
        if key in metrics:
            table.add_row(label, *(_pct(m[key]) for _, m in columns))
    table.add_row("queries used", *(str(m["num_query"]) for _, m in columns))
    table.add_row("queries skipped", *(str(m["num_skipped"]) for _, m in columns))
    return table


def camera_table(metrics: dict) -> Table | None:
    """Per-query-camera rank-1 / mAP / mINP (of the final ranking), or None if absent."""
    final = metrics.get("reranked", metrics)
    per_camera = final.get("per_camera")
    if not per_camera:
        return None
    table = Table(title="per query camera" + (" (re-ranked)" if "reranked" in metrics else ""))
    for name in ("camera", "queries", "skipped", "rank-1", "mAP", "mINP"):
        table.add_column(name, justify="right")
    for cam, m in per_camera.items():
        table.add_row(
            cam, str(m["num_query"]), str(m["num_skipped"]),
            _pct(m["rank1"]), _pct(m["mAP"]), _pct(m["mINP"]),
        )  # fmt: skip
    return table


def render_metrics(
    metrics: dict, console: Console | None = None, title: str = "evaluation"
) -> None:
    """Print the metrics (and per-camera breakdown) as rich tables, on stderr by default.

    Args:
        metrics: The result of `evaluate_features`.
        console: Where to print; a stderr console when None.
        title: Title of the main table.
    """
    console = console or Console(stderr=True)
    subtitle = f"distance {metrics.get('distance', '?')}, protocol {metrics.get('protocol', '?')}"
    if "reranked" in metrics:
        p = metrics["reranked"].get("params", {})
        subtitle += f"; re-ranking k1={p.get('k1')} k2={p.get('k2')} λ={p.get('lambda')}"
    table = metrics_table(metrics, title)
    table.caption = subtitle
    console.print(table)
    cams = camera_table(metrics)
    if cams is not None:
        console.print(cams)
