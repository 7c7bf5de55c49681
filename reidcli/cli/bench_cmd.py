"""`reid bench`: params, FLOPs, throughput and latency, with a regression gate.

Every option is the recipe's `bench` section (or `data.height`/`data.width`, `model.name`): a
flag defaults to "not given" and, when given, becomes a recipe override.
"""

import sys
from pathlib import Path

import typer

from reidcli.cli.options import (
    SET_HELP,
    choices,
    parse_size,
    print_json,
    quiet_option,
    recipe_option,
    recipe_overrides,
)
from reidcli.outputs import check_output_file, write_text_atomic
from reidcli.recipe.loading import FlagOverride
from reidcli.recipe.model import Model
from reidcli.recipe.run import Bench

ModelName = choices(Model, "name")
Mode = choices(Bench, "mode")
Device = choices(Bench, "device")


def bench_cmd(
    recipe: Path | None = typer.Argument(
        None, help="Recipe: model, input, loss, optimiser, bench section (default: schema's)."
    ),
    model: ModelName | None = recipe_option("model.name", "--model"),
    input_size: str | None = typer.Option(
        None, "--input", help="HEIGHTxWIDTH (default: the recipe's data.height x data.width)."
    ),
    batch: str | None = recipe_option("bench.batch", "--batch"),
    mode: Mode | None = recipe_option("bench.mode", "--mode"),
    amp: bool | None = recipe_option("bench.amp", "--amp/--no-amp"),
    dtype: str | None = recipe_option("bench.dtype", "--dtype"),
    channels_last: bool | None = recipe_option(
        "bench.channels_last", "--channels-last/--no-channels-last"
    ),
    cudnn_benchmark: bool | None = recipe_option(
        "bench.cudnn_benchmark", "--cudnn-benchmark/--no-cudnn-benchmark"
    ),
    compile_: bool | None = recipe_option("bench.compile", "--compile/--no-compile"),
    backend: str | None = recipe_option("bench.backend", "--backend"),
    device: Device | None = recipe_option("bench.device", "--device"),
    threads: int | None = recipe_option("bench.threads", "--threads"),
    warmup: int | None = recipe_option("bench.warmup", "--warmup"),
    iters: int | None = recipe_option("bench.iters", "--iters"),
    seconds: float | None = recipe_option("bench.seconds", "--seconds"),
    quick: bool = typer.Option(
        False, "--quick", help="Preset: batches 1,2, 1 warm-up, 2 iterations (LMBN_n < 1 min)."
    ),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON report here."),
    compare: Path | None = typer.Option(
        None, "--compare", help="Baseline report: exit 1 on a regression."
    ),
    reference: bool | None = recipe_option("bench.reference", "--reference/--no-reference"),
    tolerance: float | None = recipe_option("bench.tolerance", "--tolerance"),
    quiet: bool = quiet_option(),
) -> None:
    """Measure a model: params, GMac, images/s and latency p50/p90/p99, peak memory."""
    from reidcli import api
    from reidcli.cli.bench_table import render_comparison, render_report
    from reidcli.errors import UsageError
    from reidcli.reporting import console_reporter

    baseline = api.read_bench_report(compare) if compare is not None else None  # fails first
    if out is not None:
        check_output_file(out, "report file")
    if iters is not None and seconds is not None:
        raise UsageError("--seconds: give --iters or --seconds, not both")
    flags = recipe_overrides(bench_cmd, locals())
    if iters is not None:
        flags.append("bench.seconds=null")  # --iters wins over a recipe's `seconds`
    size = parse_size(input_size)
    if size is not None:
        flags += [FlagOverride(f"data.{side}={value}", f"--input {input_size}")
                  for side, value in zip(("height", "width"), size, strict=True)]  # fmt: skip
    changes, reporter = [*flags, *overrides], console_reporter(quiet)
    comparison = None
    if baseline is None:
        report = api.bench(recipe, overrides=changes, quick=quick, reporter=reporter)
    else:
        report, comparison = api.bench_gate(
            recipe, baseline, overrides=changes, quick=quick, reporter=reporter
        )
    render_report(report)
    if out is not None:
        import json

        write_text_atomic(out, json.dumps(report.to_json(), indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    if as_json:
        doc = report.to_json()
        print_json({**doc, "comparison": comparison.to_json()} if comparison else doc)
    if comparison is not None:
        render_comparison(comparison, str(compare))
        if not comparison.passed:
            raise typer.Exit(1)
