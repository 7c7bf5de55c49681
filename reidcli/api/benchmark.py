"""Measuring models: `reid bench` and its regression gate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from reidcli.api.overrides import Overrides, as_overrides
from reidcli.reporting import Reporter
from reidcli.results import BenchComparison, BenchReport

if TYPE_CHECKING:
    from reidcli.recipe import Recipe


def bench(
    recipe: Recipe | str | Path | None = None,
    *,
    model: str | None = None,
    overrides: Overrides = (),
    quick: bool = False,
    reporter: Reporter | None = None,
) -> BenchReport:
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
        The report (`document`: the JSON `--out` writes). A row that could not run has
        `images_per_s` None and its reason in `error`.

    Raises:
        RecipeError: invalid options. DeviceError: a device this machine lacks.
    """
    from reidcli.verbs.bench.measure import measure

    return BenchReport.from_document(
        measure(recipe, model, as_overrides(overrides), quick, reporter)
    )


def read_bench_report(path: str | Path) -> BenchReport:
    """A report written by `reid bench --out`.

    Raises:
        BenchError: not a bench report of this schema version.
    """
    from reidcli.verbs.bench.compare import load_report

    return BenchReport.from_document(load_report(path))


def compare_bench(
    report: BenchReport | dict | str | Path,
    baseline: BenchReport | dict | str | Path,
    *,
    tolerance: float | None = None,
) -> BenchComparison:
    """The regression gate: `report` against `baseline` (reports, their documents, or their
    JSON files).

    Parameters, GMac and the embedding dimension must be equal; the speed of each row present
    in both may drop by at most `tolerance` percent (default: the report's `bench.tolerance`,
    else the baseline's measured `gate.tolerance_pct`, else 25). With the reference workload
    timed in both (`bench.reference`), speeds relative to it are compared on any CPU with the
    same kernel set, thread count and torch version; otherwise images/s, on the same device
    model only.

    Raises:
        BenchError: a file that is not a bench report of this schema version.
    """
    from reidcli.verbs.bench.compare import compare_reports

    current, base = _report(report), _report(baseline)
    if tolerance is None:
        tolerance = current.document["settings"].get("tolerance")
    return BenchComparison.from_document(
        compare_reports(current.document, base.document, tolerance)
    )


def bench_gate(
    recipe: Recipe | str | Path | None,
    baseline: BenchReport | dict | str | Path,
    *,
    model: str | None = None,
    overrides: Overrides = (),
    quick: bool = False,
    reporter: Reporter | None = None,
) -> tuple[BenchReport, BenchComparison]:
    """`bench` compared with `baseline`; a slower setting is measured once more and the faster
    of the two runs counts, so that a noisy neighbour does not fail the gate."""
    from reidcli.verbs.bench.compare import best_of

    base = _report(baseline)
    report = bench(recipe, model=model, overrides=overrides, quick=quick, reporter=reporter)
    comparison = compare_bench(report, base)
    if comparison.regressions and not comparison.size_mismatches:
        if reporter is not None:
            reporter.message("slower than the baseline: measuring again to confirm")
        again = bench(recipe, model=model, overrides=overrides, quick=quick, reporter=reporter)
        report = BenchReport.from_document(best_of(report.document, again.document))
        comparison = compare_bench(report, base)
    return report, comparison


def _report(report: BenchReport | dict | str | Path) -> BenchReport:
    if isinstance(report, BenchReport):
        return report
    if isinstance(report, dict):
        from reidcli.verbs.bench.compare import check_report

        return BenchReport.from_document(check_report(report))
    return read_bench_report(report)
