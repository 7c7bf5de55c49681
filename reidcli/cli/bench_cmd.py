"""`reid bench`: params, FLOPs, throughput and latency, with a regression gate.

Every option is the recipe's `bench` section (or `data.height`/`data.width`, `model.name`): a
flag defaults to "not given" and, when given, becomes a recipe override.
"""

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer

from reidcli.cli.embed_cmd import parse_size
from reidcli.cli.eval_cmd import Device, default_of
from reidcli.cli.recipe_cmd import SET_HELP, given_flags
from reidcli.outputs import check_output_file, write_text_atomic
from reidcli.recipe.loading import FlagOverride
from reidcli.recipe.model import MODELS
from reidcli.recipe.run import Bench

ModelName = StrEnum("ModelName", {name: name for name in MODELS})


class Mode(StrEnum):
    eval = "eval"
    train = "train"
    both = "both"


# Flag name -> the recipe key it sets.
FLAG_KEYS = {
    "model": "model.name",
    "batch": "bench.batch",
    "mode": "bench.mode",
    "amp": "bench.amp",
    "dtype": "bench.dtype",
    "channels_last": "bench.channels_last",
    "cudnn_benchmark": "bench.cudnn_benchmark",
    "compile": "bench.compile",
    "backend": "bench.backend",
    "device": "bench.device",
    "threads": "bench.threads",
    "warmup": "bench.warmup",
    "iters": "bench.iters",
    "seconds": "bench.seconds",
    "tolerance": "bench.tolerance",
}


def _default(name: str) -> str:
    value = default_of(Bench, name)
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def bench_cmd(
    recipe: Path | None = typer.Argument(
        None, help="Recipe: model, input, loss, optimiser, bench section (default: schema's)."
    ),
    model: ModelName | None = typer.Option(None, "--model", help="Catalog model to measure."),
    input_size: str | None = typer.Option(
        None, "--input", help="HEIGHTxWIDTH (default: the recipe's data.height x data.width)."
    ),
    batch: str | None = typer.Option(
        None, "--batch", help=f"Eval batch sizes, comma-separated (default {_default('batch')})."
    ),
    mode: Mode | None = typer.Option(
        None, "--mode", help="eval (the embedding), train (a whole step at P×K) or both."
    ),
    amp: bool | None = typer.Option(
        None, "--amp/--no-amp", help="Time autocast beside fp32 (CPU: bf16) and print the gain."
    ),
    dtype: str | None = typer.Option(
        None,
        "--dtype",
        help="Autocast precisions beside fp32 (implies --amp): bf16, fp16 or bf16,fp16.",
    ),
    channels_last: bool | None = typer.Option(
        None, "--channels-last/--no-channels-last", help="Time channels_last beside contiguous."
    ),
    cudnn_benchmark: bool | None = typer.Option(
        None,
        "--cudnn-benchmark/--no-cudnn-benchmark",
        help="Time cudnn.benchmark on beside off (CUDA; n/a rows on CPU).",
    ),
    compile_: bool | None = typer.Option(
        None, "--compile/--no-compile", help="torch.compile the model (torch backend)."
    ),
    backend: str | None = typer.Option(
        None, "--backend", help="torch, torchscript, onnxruntime, comma-separated (eval mode)."
    ),
    device: Device | None = typer.Option(None, "--device", help="auto, cpu or cuda."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Intra-op threads."),
    warmup: int | None = typer.Option(
        None, "--warmup", min=0, help=f"Untimed iterations per row (default {_default('warmup')})."
    ),
    iters: int | None = typer.Option(
        None, "--iters", min=1, help=f"Timed iterations per row (default {_default('iters')})."
    ),
    seconds: float | None = typer.Option(
        None, "--seconds", min=0.0, help="Time each row for S seconds instead of --iters."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Preset: batches 1,2, 1 warm-up, 2 iterations (LMBN_n < 1 min)."
    ),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON report here."),
    compare: Path | None = typer.Option(
        None, "--compare", help="Baseline report: exit 1 on a regression."
    ),
    tolerance: float | None = typer.Option(
        None,
        "--tolerance",
        help=f"--compare: allowed images/s drop in percent (default {_default('tolerance')}).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Measure a model: params, GMac, images/s and latency p50/p90/p99, peak memory."""
    from reidcli import api
    from reidcli.bench.compare import best_of, load_report
    from reidcli.bench.table import render_comparison, render_report
    from reidcli.reporting import console_reporter

    baseline = load_report(compare) if compare is not None else None  # bad files fail first
    if out is not None:
        check_output_file(out, "report file")
    if iters is not None and seconds is not None:
        raise typer.BadParameter("give --iters or --seconds, not both", param_hint="--seconds")
    flags = given_flags(
        FLAG_KEYS,
        dict(
            model=model, batch=batch, mode=mode, amp=amp, dtype=dtype,
            channels_last=channels_last, cudnn_benchmark=cudnn_benchmark, compile=compile_,
            backend=backend, device=device, threads=threads, warmup=warmup, iters=iters,
            seconds=seconds, tolerance=tolerance,
        ),
    )  # fmt: skip
    if iters is not None:
        flags.append("bench.seconds=null")  # --iters wins over a recipe's `seconds`
    size = parse_size(input_size)
    if size is not None:
        flags += [FlagOverride(f"data.{side}={value}", f"--input {input_size}")
                  for side, value in zip(("height", "width"), size, strict=True)]  # fmt: skip

    def measure() -> dict:
        return api.bench(
            recipe, overrides=[*flags, *overrides], quick=quick, reporter=console_reporter(quiet)
        )

    report = measure()
    comparison = api.compare_bench(report, baseline) if baseline is not None else None
    if comparison is not None and comparison["regressions"] and not comparison["size_mismatches"]:
        # A slower row is measured once more before it fails the gate; the faster run counts.
        print("slower than the baseline: measuring again to confirm", file=sys.stderr)
        report = best_of(report, measure())
        comparison = api.compare_bench(report, baseline)
    render_report(report)
    document = json.dumps(report, indent=2) + "\n"
    if out is not None:
        write_text_atomic(out, document)
        print(f"wrote {out}", file=sys.stderr)
    if as_json:
        doc = {**report, "comparison": comparison} if comparison else report
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    if comparison is not None:
        render_comparison(comparison, str(compare))
        if not comparison["passed"]:
            raise typer.Exit(1)
