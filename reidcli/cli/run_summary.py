"""What `reid train` and `reid adapt` print at the end of a run, and how they exit."""

import signal

import typer


def run_table(result):
    """A rich table titled with the run folder and status, with its epochs and steps."""
    from rich.table import Table

    table = Table(title=f"run {result.run_dir} ({result.status})")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("epochs", str(result.epochs_done))
    table.add_row("steps", str(result.steps))
    return table


def exit_if_interrupted(result) -> None:
    """An interrupted run exits as its signal would have: 128 + the signal's number."""
    if result.status == "interrupted":
        raise typer.Exit(128 + signal.Signals[result.signal or "SIGTERM"])
