"""A bench report and its comparison as rich tables on stderr (no torch)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from reidcli.devices import emulated_precision_note
from reidcli.results import BenchComparison, BenchReport, BenchRow


def _console() -> Console:
    """stderr; at least 120 columns when it is not a terminal (a CI log is not 80 wide), and
    lines of text are never wrapped (a log is searched for them)."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(
            stderr=True, highlight=False, soft_wrap=True, width=max(console.width, 120)
        )
    return console


def render_report(report: BenchReport, console: Console | None = None) -> None:
    console = console or _console()
    height, width = report.input
    flip = " with flip TTA" if report.flip else ""
    console.print(
        f"[bold]{report.model}[/bold] {height}x{width}: "
        f"{report.params:,} params ({report.params_without_classifier:,} without "
        f"classifiers), {report.gmacs:.3g} GMac / {report.gflops:.3g} GFLOPs per image"
        f"{flip} ({report.forward_gmacs:.3g} GMac a forward pass), "
        f"{report.embedding_dim}-d embedding"
    )
    console.print(
        f"{report.device_name} ({report.device}, {report.cpu_capability} kernels, "
        f"{report.threads} threads), torch {report.torch}",
        markup=False,
    )
    table = Table()
    columns = ("mode", "backend", "batch", "setting", "images/s", "ms p50 / p90 / p99")
    relative = any(row.relative_speed is not None for row in report.rows)
    extra = ("vs reference",) if relative else ()
    for name in (*columns, "peak MiB", "speed-up", *extra):
        left = name in ("mode", "backend", "setting")
        table.add_column(name, justify="left" if left else "right")
    notes: list[str] = []
    for row in report.rows:
        backend = row.backend + (" (compiled)" if row.compile else "")
        head = [row.mode, backend, str(row.batch), _setting(row)]
        if row.images_per_s is None or row.latency_ms is None:
            error = row.error or "not run"
            if error not in notes:
                notes.append(error)
            label = "n/a" if error.startswith("not applicable") else "failed"
            table.add_row(*head, f"[yellow]{label} [{notes.index(error) + 1}][/yellow]")
            continue
        lat = row.latency_ms
        speedup = f"{row.speedup:.2f}x" if row.speedup else ""
        versus = (f"{row.relative_speed:.3f}" if row.relative_speed is not None else "",)
        table.add_row(
            *head, f"{row.images_per_s:.1f}", f"{lat.p50:.1f} / {lat.p90:.1f} / {lat.p99:.1f}",
            "n/a" if row.peak_memory_mb is None else f"{row.peak_memory_mb:.0f}", speedup,
            *(versus if relative else ()),
        )  # fmt: skip
    console.print(table)
    for number, note in enumerate(notes, 1):
        console.print(f"[{number}] {note}", markup=False)
    env = report.document["env"]
    for precision in sorted({row.precision for row in report.rows} - {"fp32"}):
        if env.get(f"native_{precision}") is False:
            console.print(f"note: {emulated_precision_note(precision)}", markup=False)
    for precision in report.document["settings"].get("precisions_left_out", []):
        console.print(
            f"note: {precision} not timed: it is emulated on this CPU (amp: auto times the "
            "precisions it computes in hardware; --amp times it anyway)",
            markup=False,
        )
    if relative:
        console.print(
            f"vs reference: images/s against {report.document['settings']['reference']} at the "
            "same batch, precision and layout, timed in alternation (comparable across CPUs)",
            markup=False,
        )
    console.print(
        "images/s from the median iteration; speed-up against the fp32, contiguous torch row of "
        "the same mode and batch; peak memory: "
        + ("CUDA max allocated" if report.device == "cuda" else "the process's peak resident set"),
        markup=False,
    )


def _setting(row: BenchRow) -> str:
    parts = ["int8" if row.backend.endswith("-int8") else row.precision]
    if row.channels_last:
        parts.append("channels_last")
    if row.cudnn_benchmark is not None:
        parts.append(f"cudnn.benchmark {'on' if row.cudnn_benchmark else 'off'}")
    return " ".join(parts)


def render_comparison(
    comparison: BenchComparison, baseline: str, console: Console | None = None
) -> None:
    console = console or _console()
    for item in comparison.size_mismatches:
        console.print(
            f"[red]size differs from {baseline}[/red]: {item['key']} {item['baseline']} in the "
            f"baseline, {item['current']} now"
        )
    if not comparison.timing_compared:
        reasons = "; ".join(comparison.timing_not_compared_because)
        console.print(f"timing not compared with {baseline}: {reasons}", markup=False)
    if comparison.rows and comparison.compared_by == "relative_speed":
        console.print("speed relative to the reference workload timed in the same run:")
    for entry in comparison.rows:
        colour = "red" if entry.regression else "green"
        console.print(f"[{colour}]{entry.row}[/{colour}]: {entry.note}")
    for line in comparison.rows_not_compared:
        console.print(f"timing not compared: {line}", markup=False)
    for what, rows in (("not in the baseline", comparison.not_in_baseline),
                       ("in the baseline only", comparison.not_run)):  # fmt: skip
        if rows:
            console.print(f"{what}: {', '.join(rows)}", markup=False)
    if comparison.passed:
        console.print(f"[green]no regression against {baseline}[/green]")
    else:
        changed = [f"{m['key']} changed" for m in comparison.size_mismatches]
        console.print(
            f"[red]regression against {baseline}[/red]: "
            + "; ".join([*changed, *comparison.regressions])
        )
