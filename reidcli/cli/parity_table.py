"""Rendering of `reid export`'s results: the parity table and what was written."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from reidcli.results import ExportResult, ParityReport


def render_export(result: ExportResult) -> None:
    """The parity of every checked file, then a line per file written, on stderr."""
    console = Console(stderr=True)
    checked = [(e.format, e.parity) for e in result.exports if e.parity is not None]
    if checked:
        parity_table(f"parity with the PyTorch model ({result.model})", checked)
    for item in result.exports:
        if item.retrieval is not None:
            check = item.retrieval
            console.print(
                f"INT8 retrieval check on the {check['split']} split ({check['queries']} queries, "
                f"{check['gallery']} gallery): mAP {check['fp32']['mAP']:.2f} -> "
                f"{check['int8']['mAP']:.2f}, rank-1 {check['fp32']['rank1']:.2f} -> "
                f"{check['int8']['rank1']:.2f} (allowed drop {check['max_drop']:g} points): ok; "
                f"calibrated on {item.calibration['images']} train crops",
                highlight=False,
            )
        how = item.exporter + (f", opset {item.opset}" if item.opset else "")
        if item.fallback_reason:
            how += f" (dynamo exporter failed: {item.fallback_reason})"
        console.print(
            f"wrote {item.path} and {Path(item.metadata_path).name}: {item.format}, {how}, "
            f"batch {item.batch}, {item.input_dtype} input, {item.precision}, "
            f"{item.embedding_dim}-d features",
            highlight=False,
        )


def parity_table(title: str, rows: list[tuple[str, ParityReport]]) -> None:
    """One table of per-batch parity figures, on stderr."""
    first = rows[0][1]
    table = Table(title=f"{title}: max abs ≤ {first.atol:.3g}, cosine ≥ {first.min_cos}")
    for column in ("format", "batch", "max abs diff", "min cosine", "worst sample", "result"):
        table.add_column(column, justify="right" if column == "batch" else "left")
    for fmt, report in rows:
        for row in report.batches:
            table.add_row(
                fmt, str(row.batch), f"{row.max_abs:.3g}", f"{row.min_cos:.7f}",
                f"#{row.worst_index} {Path(row.worst_source).name}",
                "ok" if row.passed else "FAILED",
            )  # fmt: skip
    console = Console(stderr=True)
    console.print(table)
    console.print(f"parity inputs: {first.inputs}", highlight=False)
