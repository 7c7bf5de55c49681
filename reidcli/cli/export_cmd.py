"""`reid export`: a trained model to ONNX (fp32/fp16/INT8), OpenVINO, .pt2 or TorchScript.

What is written and how is the recipe's `export` section: each such flag defaults to "not
given" and, when given, becomes an `export.*` override of the checkpoint's recipe; `--out` and
`--recipe` are `ExportOptions`.
"""

from pathlib import Path

import typer

from reidcli.cli.options import (
    SET_HELP,
    build,
    choices,
    json_option,
    option,
    print_json,
    recipe_option,
    recipe_overrides,
)
from reidcli.errors import ParityError
from reidcli.recipe.options import ExportOptions
from reidcli.recipe.run import Export

Format = choices(Export, "formats")
Exporter = choices(Export, "exporter")


def export_cmd(
    target: Path | None = typer.Argument(
        None, help="Run folder (best.pt, else last.pt) or checkpoint; default: newest under runs/."
    ),
    formats: list[Format] | None = recipe_option("export.formats", "--format"),
    out: Path | None = option(ExportOptions, "out", "--out"),
    opset: int | None = recipe_option("export.opset", "--opset"),
    static_batch: int | None = recipe_option("export.static_batch", "--static-batch"),
    fp16: bool | None = recipe_option("export.fp16", "--fp16/--no-fp16"),
    include_preprocessing: bool | None = recipe_option(
        "export.include_preprocessing", "--include-preprocessing/--no-include-preprocessing"
    ),
    check: bool | None = recipe_option("export.check", "--check/--no-check"),
    atol: float | None = recipe_option("export.atol", "--atol"),
    min_cos: float | None = recipe_option("export.min_cos", "--min-cos"),
    recipe: Path | None = option(ExportOptions, "recipe", "--recipe"),
    exporter: Exporter | None = recipe_option("export.exporter", "--exporter"),
    int8: bool | None = recipe_option("export.int8", "--int8/--no-int8"),
    calibrate: str | None = recipe_option("export.calibrate", "--calibrate"),
    calibration_images: int | None = recipe_option(
        "export.calibration_images", "--calibration-images"
    ),
    max_map_drop: float | None = recipe_option("export.max_map_drop", "--max-map-drop"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = json_option(),
) -> None:
    """Export a model whose output is exactly the evaluated embedding, with a parity check."""
    from reidcli import api
    from reidcli.cli.parity_table import parity_table, render_export

    flags = recipe_overrides(export_cmd, locals())
    options = build(ExportOptions, {"out": out, "recipe": recipe})
    try:
        result = api.export(target, options, overrides=[*flags, *overrides])
    except ParityError as err:
        report = getattr(err, "report", None)
        if report is not None:
            parity_table("parity check (failed)", [("", report)])
            if as_json:
                print_json({"error": str(err), "parity": report.to_json()})
        raise
    render_export(result)
    if as_json:
        print_json(result.to_json())
