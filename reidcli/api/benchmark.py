"""Measuring models: `reid bench` and its regression gate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from reidcli.api.overrides import Overrides, as_overrides
from reidcli.reporting import Reporter

if TYPE_CHECKING:
    from reidcli.recipe import Recipe


def bench(
    recipe: Recipe | str | Path | None = None,
    *,
    model: str | None = None,
    overrides: Overrides = (),
    quick: bool = False,
    reporter: Reporter | None = None,
) -> dict:
    """Size, throughput and latency of a model in the settings of the recipe's `bench` section.

    Options resolve as everywhere: schema defaults, the recipe file, the `quick` preset, then
    `model` and `overrides` (e.g. `{"bench.amp": True, "bench.batch": [1, 32]}`). The model is
    built with fresh weights (`model.pretrained` is not loaded) and 751-class heads.

    Args:
        recipe: a `Recipe`, a recipe file, or None for the schema defaults.
        model: a catalog model name (sets `model.name`).
        overrides: recipe values that win (see `Overrides`).
        quick: the preset that times LMBN_n on two CPU cores in under a minute (batches 1 and
            2, one warm-up and two timed iterations per row).
        reporter: progress, a row at a time (silent when None).

    Returns:
        The report: {"schema_version", "model", "params", "params_trainable",
        "params_without_classifier", "gmacs", "gflops", "forward_gmacs", "flip",
        "embedding_dim", "input", "settings", "env", "results": [{"mode", "batch", "precision",
        "channels_last", "cudnn_benchmark", "backend", "compile", "images_per_s", "latency_ms":
        {"p50", "p90", "p99"}, "peak_memory_mb", "speedup", "iterations", "error"}]}.
        A row that could not run has `images_per_s` None and its reason in `error`.

    Raises:
        RecipeError: invalid options. DeviceError: a device this machine lacks.
    """
    from reidcli.bench.measure import QUICK, run_bench
    from reidcli.recipe import Recipe as RecipeModel
    from reidcli.recipe import load_recipe, override_recipe

    changes = as_overrides(QUICK) if quick else []
    changes += [f"model.name={model}"] if model is not None else []
    changes += as_overrides(overrides)
    if isinstance(recipe, RecipeModel):
        resolved = override_recipe(recipe, changes)
    else:
        resolved = load_recipe(recipe, changes)
    return run_bench(resolved, reporter)


def compare_bench(
    report: dict | str | Path, baseline: dict | str | Path, *, tolerance: float | None = None
) -> dict:
    """The regression gate: `report` against `baseline` (reports or their JSON files).

    Parameters, GMac and the embedding dimension must be equal; images/s of each row present in
    both may drop by at most `tolerance` percent (default: the report's `bench.tolerance`), and
    is compared only when the device name, torch version, kernel set and thread count match.

    Returns:
        {"passed", "tolerance", "size_mismatches", "timing_compared",
        "timing_not_compared_because", "rows", "regressions", "not_in_baseline", "not_run"}.

    Raises:
        BenchError: a file that is not a bench report of this schema version.
    """
    from reidcli.bench.compare import compare_reports, load_report
    from reidcli.recipe.run import Bench

    current = report if isinstance(report, dict) else load_report(report)
    base = baseline if isinstance(baseline, dict) else load_report(baseline)
    if tolerance is None:
        tolerance = current.get("settings", {}).get("tolerance", Bench().tolerance)
    return compare_reports(current, base, tolerance)
