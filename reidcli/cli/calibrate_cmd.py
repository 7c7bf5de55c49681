"""`reid calibrate`: "same person?" distance thresholds at stated false-match rates."""

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from reidcli.cli.options import build, choices, json_option, option, parse_fars, quiet_option
from reidcli.recipe.options import CalibrateOptions
from reidcli.results import PairCounts

Device = choices(CalibrateOptions, "device")
Runner = choices(CalibrateOptions, "runner")
Split = choices(CalibrateOptions, "split")
Distance = choices(CalibrateOptions, "distance")


def _ci(pair, scale: float = 1.0, digits: int = 1) -> str:
    return f"{scale * pair[0]:.{digits}f}–{scale * pair[1]:.{digits}f}"


def _sci(value: float) -> str:
    """1.2e-3, not 1.2e-03: narrow columns."""
    return f"{value:.1e}".replace("e-0", "e-").replace("e+00", "")


def _sci_ci(pair) -> str:
    return f"{_sci(pair[0])}–{_sci(pair[1])}"


def calibrate_cmd(
    source: Path = typer.Argument(
        ...,
        help="Labeled features .npz (reid eval --save-features, reid embed --dataset), or a "
        "run folder / checkpoint (its validation split is embedded).",
    ),
    far: str | None = option(CalibrateOptions, "far", "--far", callback=parse_fars),
    out: Path | None = option(CalibrateOptions, "out", "--out"),
    plot: bool | None = option(CalibrateOptions, "plot", "--plot/--no-plot"),
    distance: Distance | None = option(CalibrateOptions, "distance", "--distance"),
    split: Split | None = option(CalibrateOptions, "split", "--split"),
    bootstrap: int | None = option(CalibrateOptions, "bootstrap", "--bootstrap"),
    confidence: float | None = option(CalibrateOptions, "confidence", "--confidence"),
    seed: int | None = option(CalibrateOptions, "seed", "--seed"),
    verify: Path | None = option(CalibrateOptions, "verify", "--verify"),
    device: Device | None = option(CalibrateOptions, "device", "--device"),
    runner: Runner | None = option(CalibrateOptions, "runner", "--runner"),
    recipe: Path | None = option(CalibrateOptions, "recipe", "--recipe"),
    quiet: bool = quiet_option(),
    as_json: bool = json_option(),
) -> None:
    """Distance thresholds at stated false-match rates (FAR), with the true-match rate (TAR).

    Same-person pairs across cameras and different-person pairs are measured on labeled data of
    your cameras; each threshold keeps the share of different-person pairs under it at the FAR.
    Intervals are bootstrap intervals over identities.
    """
    import sys

    from reidcli import api
    from reidcli.cli.options import print_json
    from reidcli.reporting import console_reporter

    given = {
        "far": far, "out": out, "plot": plot, "distance": distance, "split": split,
        "bootstrap": bootstrap, "confidence": confidence, "seed": seed, "device": device,
        "runner": runner, "recipe": recipe,
    }  # fmt: skip
    options = build(CalibrateOptions, given)
    console = Console(stderr=True)
    if verify is not None:
        check = api.check_calibration(source, verify, options, reporter=console_reporter(quiet))
        table = Table(title=f"{verify} on {check.source}")
        for name in ("FAR asked", "threshold", "FAR", "FAR CI", "TAR %", "TAR CI"):
            table.add_column(name, justify="right", overflow="fold")
        for t in check.thresholds:
            table.add_row(f"{t.far:g}", f"{t.threshold:.4f}", _sci(t.measured_far),
                          _sci_ci(t.far_ci), f"{100 * t.measured_tar:.2f}",
                          _ci(t.tar_ci, 100))  # fmt: skip
        table.caption = f"CI: {_confidence(options)} bootstrap over identities; " + _pairs_caption(
            check.pairs
        )
        console.print(table)
        if as_json:
            print_json(check.to_json())
        return
    result = api.calibrate(source, options, reporter=console_reporter(quiet))
    c = result.calibration
    table = Table(title=f"calibration of {c.source}")
    for name in ("FAR", "threshold", "threshold CI", "TAR %", "TAR CI", "FAR CI"):
        table.add_column(name, justify="right", overflow="fold")
    for t in c.thresholds:
        table.add_row(f"{t.far:g}", f"{t.threshold:.4f}", _ci(t.threshold_ci, digits=4),
                      f"{100 * t.tar:.2f}", _ci(t.tar_ci, 100),
                      _sci_ci(t.far_ci))  # fmt: skip
    table.caption = (
        f"{c.metric} distance, same person when distance < threshold; CI: "
        f"{_confidence(options)} bootstrap over identities; "
        f"{_pairs_caption(c.pairs)}; smallest measurable FAR {_sci(c.min_far)}"
    )
    console.print(table)
    if as_json:
        print_json(result.to_json())
    if not quiet:
        for path in (result.out, result.figure):
            if path is not None:
                print(f"wrote {path}", file=sys.stderr)


def _pairs_caption(pairs: PairCounts) -> str:
    return (
        f"{pairs.positive:,} same-person pairs across cameras, {pairs.negative:,} "
        f"different-person pairs ({pairs.kind}), {pairs.identities} identities, "
        f"{pairs.cameras} cameras"
    )


def _confidence(options: CalibrateOptions) -> str:
    return f"{100 * options.confidence:g}%"
