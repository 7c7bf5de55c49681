"""`reid train`: train a model from a recipe (also the torchrun entry point)."""

import os
from pathlib import Path

import typer

from reidcli.cli.options import (
    SET_HELP,
    build,
    choices,
    json_option,
    option,
    print_json,
    quiet_option,
)
from reidcli.cli.run_summary import exit_if_interrupted, run_table
from reidcli.recipe.options import TrainOptions
from reidcli.results import METRIC_KEYS

Device = choices(TrainOptions, "device")


def train_cmd(
    recipe: Path | None = typer.Argument(
        None, help="Recipe YAML file (with --resume, defaults to RUN_DIR/recipe.yaml)."
    ),
    out: Path | None = option(TrainOptions, "out", "--out"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool | None = option(TrainOptions, "resume", "--resume/--no-resume"),
    resume_from: Path | None = option(TrainOptions, "resume_from", "--resume-from"),
    overwrite: bool | None = option(TrainOptions, "overwrite", "--overwrite/--no-overwrite"),
    device: Device | None = option(TrainOptions, "device", "--device"),
    quiet: bool = quiet_option(),
    as_json: bool = json_option(),
) -> None:
    """Train a model; `torchrun --nproc_per_node N -m reidcli train RECIPE` runs it distributed."""
    from reidcli import api
    from reidcli.reporting import console_reporter

    given = {"out": out, "resume": resume, "resume_from": resume_from, "overwrite": overwrite,
             "device": device}  # fmt: skip
    options = build(TrainOptions, given)
    result = api.train(recipe, None, options, overrides=overrides, reporter=console_reporter(quiet))
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if not quiet:
        _render(result)
    if as_json:
        print_json(result.to_json(), indent=None)  # one line: the last of torchrun's output
    exit_if_interrupted(result)


def _render(result) -> None:
    from rich.console import Console

    console = Console(stderr=True)
    table = run_table(result)
    best = result.best_metrics
    if best is not None:
        table.add_row("best epoch (validation mAP)", str(result.best_epoch))
        for key in METRIC_KEYS:
            if key not in ("num_query", "num_skipped"):
                table.add_row(f"best {key}", f"{100 * getattr(best, key):.2f}%")
    else:
        table.add_row("validation", "none (no validation identities)")
    console.print(table)
