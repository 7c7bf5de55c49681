"""`reid train`: train a model from a recipe (also the torchrun entry point)."""

import json
import os
import sys
import time
from pathlib import Path

import typer

from reidcli.cli.recipe_cmd import SET_HELP
from reidcli.errors import RecipeError


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
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Train a model; `torchrun --nproc_per_node N -m reidcli train RECIPE` runs it distributed."""
    from reidcli.recipe import load_recipe

    if device not in ("auto", "cpu", "cuda"):
        raise RecipeError(f"--device must be auto, cpu or cuda, got {device!r}")
    if resume:
        if out is None:
            raise RecipeError("--resume continues a run folder: give it with --out RUN_DIR")
        if resume_from is not None:
            raise RecipeError("use either --resume (RUN_DIR/last.pt) or --resume-from CKPT")
        resume_from = out / "last.pt"
        if not resume_from.exists():
            raise RecipeError(f"--resume: {resume_from} does not exist")
        recipe = recipe or out / "recipe.yaml"
    if recipe is None:
        raise RecipeError("missing RECIPE: reid train RECIPE [--out RUN_DIR]")
    resolved = load_recipe(recipe, overrides)
    if out is None:
        out = Path("runs") / f"{recipe.stem}-{time.strftime('%Y%m%d-%H%M%S')}"

    from reidcli import api

    result = api.train(resolved, out, resume_from=resume_from, device=device)
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
    _render(summary)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    if result.status == "interrupted":
        raise typer.Exit(143 if result.signal == "SIGTERM" else 130)


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
        for key in ("mAP", "rank1", "rank5", "rank10", "mINP"):
            if key in best:
                table.add_row(f"best {key}", f"{100 * best[key]:.2f}%")
    else:
        table.add_row("validation", "none (no validation identities)")
    console.print(table)
