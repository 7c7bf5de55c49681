"""`reid train`: train a model from a recipe (also the torchrun entry point)."""

import json
import os
import sys
from pathlib import Path

import typer

from reidcli.cli.eval_cmd import Device
from reidcli.cli.recipe_cmd import SET_HELP


def train_cmd(
    recipe: Path | None = typer.Argument(
        None, help="Recipe YAML file (with --resume, defaults to RUN_DIR/recipe.yaml)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Run folder; default runs/<recipe name>-<date>-<time>."
    ),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from last.pt."),
    resume_from: Path | None = typer.Option(
        None, "--resume-from", help="Continue from this checkpoint, writing to --out."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start over in an --out that holds a run (reid's files only)."
    ),
    device: Device = typer.Option("auto", "--device", help="Where to train."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Train a model; `torchrun --nproc_per_node N -m reidcli train RECIPE` runs it distributed."""
    from reidcli import api
    from reidcli.reporting import console_reporter

    result = api.train(
        recipe,
        out,
        overrides=overrides,
        resume=resume,
        resume_from=resume_from,
        device=device.value,
        reporter=console_reporter(quiet),
        overwrite=overwrite,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return
    summary = {
        "run_dir": str(result.run_dir),
        "status": result.status,
        "epochs": result.epochs_done,
        "steps": result.steps,
        "best": result.best,
        "last_val": result.last_val,
    }
    if not quiet:
        _render(summary)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    if result.status == "interrupted":
        from reidcli.engine.interrupt import exit_code

        raise typer.Exit(exit_code(result.signal or "SIGTERM"))


def _render(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    table = Table(title=f"run {summary['run_dir']} ({summary['status']})")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("epochs", str(summary["epochs"]))
    table.add_row("steps", str(summary["steps"]))
    best = summary["best"]
    if best:
        table.add_row("best epoch (validation mAP)", str(best["epoch"]))
        for key, value in best.items():
            if key not in ("epoch", "num_query", "num_skipped"):
                table.add_row(f"best {key}", f"{100 * value:.2f}%")
    else:
        table.add_row("validation", "none (no validation identities)")
    console.print(table)
