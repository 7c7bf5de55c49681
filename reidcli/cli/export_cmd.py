"""`reid export`: a trained model to ONNX / TorchScript, checked against PyTorch."""

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer

from reidcli.errors import ParityError


class Format(StrEnum):
    onnx = "onnx"
    torchscript = "torchscript"


class Exporter(StrEnum):
    auto = "auto"
    dynamo = "dynamo"
    legacy = "legacy"


def export_cmd(
    target: Path | None = typer.Argument(
        None, help="Run folder (best.pt, else last.pt) or checkpoint; default: newest under runs/."
    ),
    formats: list[Format] | None = typer.Option(
        None, "--format", help="onnx or torchscript; repeat for both (default: recipe export)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="File to write (default: beside the checkpoint, best.onnx, ...)."
    ),
    opset: int | None = typer.Option(
        None, "--opset", min=11, help="ONNX opset (default: the recipe's)."
    ),
    static_batch: int | None = typer.Option(
        None, "--static-batch", min=1, help="Fix the ONNX batch size (default: dynamic)."
    ),
    fp16: bool = typer.Option(False, "--fp16", help="float16 weights and arithmetic."),
    include_preprocessing: bool = typer.Option(
        False, "--include-preprocessing", help="Take uint8 RGB; scale and normalise in the graph."
    ),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Parity check against the PyTorch model."
    ),
    atol: float | None = typer.Option(
        None, "--atol", help="Max abs difference allowed (default 1e-4; fp16 1e-2)."
    ),
    min_cos: float | None = typer.Option(
        None, "--min-cos", help="Min per-sample cosine (default 0.9999; fp16 0.999)."
    ),
    recipe: Path | None = typer.Option(
        None, "--recipe", help="Recipe of a weights file that carries none (LightMBN .pth)."
    ),
    exporter: Exporter = typer.Option(
        Exporter.auto, "--exporter", help="ONNX: auto (dynamo, legacy where it fails)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Export a model whose output is exactly the evaluated embedding, with a parity check."""
    from reidcli import api

    try:
        result = api.export(
            target,
            formats=tuple(f.value for f in formats) if formats else None,
            out=out,
            opset=opset,
            static_batch=static_batch,
            fp16=fp16,
            include_preprocessing=include_preprocessing,
            check=check,
            atol=atol,
            min_cos=min_cos,
            recipe=recipe,
            exporter=exporter.value,
        )
    except ParityError as err:
        report = getattr(err, "report", None)
        if report is not None:
            _parity_table("parity check (failed)", [("", report)])
            if as_json:
                sys.stdout.write(json.dumps({"error": str(err), "parity": report}, indent=2) + "\n")
        raise
    _render(result)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")


def _render(result: dict) -> None:
    from rich.console import Console

    console = Console(stderr=True)
    checked = [(e["format"], e["parity"]) for e in result["exports"] if e["parity"] is not None]
    if checked:
        _parity_table(f"parity with the PyTorch model ({result['model']})", checked)
    for item in result["exports"]:
        how = item["exporter"] + (f", opset {item['opset']}" if item["opset"] else "")
        if item["fallback_reason"]:
            how += f" (dynamo exporter failed: {item['fallback_reason']})"
        console.print(
            f"wrote {item['path']} and {Path(item['metadata_path']).name}: {item['format']}, "
            f"{how}, batch {item['batch']}, {item['input_dtype']} input, {item['precision']}, "
            f"{item['embedding_dim']}-d features",
            highlight=False,
        )


def _parity_table(title: str, rows: list[tuple[str, dict]]) -> None:
    from rich.console import Console
    from rich.table import Table

    first = rows[0][1]
    table = Table(title=f"{title}: max abs ≤ {first['atol']:.3g}, cosine ≥ {first['min_cos']}")
    for column in ("format", "batch", "max abs diff", "min cosine", "worst sample", "result"):
        table.add_column(column, justify="right" if column == "batch" else "left")
    for fmt, report in rows:
        for row in report["batches"]:
            sample = row["worst_sample"]
            table.add_row(
                fmt,
                str(row["batch"]),
                f"{row['max_abs']:.3g}",
                f"{row['min_cos']:.7f}",
                f"#{sample['index']} {Path(sample['source']).name}",
                "ok" if row["passed"] else "FAILED",
            )
    console = Console(stderr=True)
    console.print(table)
    console.print(f"parity inputs: {first.get('inputs', '')}", highlight=False)
