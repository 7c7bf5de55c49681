"""`reid adapt`: adapt a trained model to new cameras from their unlabeled crops."""

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
from reidcli.recipe.options import AdaptOptions

Device = choices(AdaptOptions, "device")


def adapt_cmd(
    recipe: Path | None = typer.Argument(
        None, help="Recipe YAML file with an adapt section (with --resume: RUN_DIR/recipe.yaml)."
    ),
    out: Path | None = option(AdaptOptions, "out", "--out"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool | None = option(AdaptOptions, "resume", "--resume/--no-resume"),
    overwrite: bool | None = option(AdaptOptions, "overwrite", "--overwrite/--no-overwrite"),
    device: Device | None = option(AdaptOptions, "device", "--device"),
    quiet: bool = quiet_option(),
    as_json: bool = json_option(),
) -> None:
    """Adapt a trained model to new cameras: cluster their unlabeled crops, learn the clusters."""
    from reidcli import api
    from reidcli.reporting import console_reporter

    given = {"out": out, "resume": resume, "overwrite": overwrite, "device": device}
    options = build(AdaptOptions, given)
    result = api.adapt(recipe, None, options, overrides=overrides, reporter=console_reporter(quiet))
    if not quiet:
        _render(result)
    if as_json:
        print_json(result.to_json(), indent=None)
    exit_if_interrupted(result)


def _render(result) -> None:
    from rich.console import Console

    table = run_table(result)
    clusters = result.clusters
    table.add_row("last clustering (epoch)", str(clusters.get("clustered_at_epoch")))
    table.add_row("clusters", f"{clusters.get('clusters', 0):,}")
    table.add_row("outliers", f"{clusters.get('outliers', 0):,}")
    table.add_row("eps", f"{clusters.get('eps', float('nan')):.3f}")
    if "size_median" in clusters:
        sizes = f"{clusters['size_min']} / {clusters['size_median']:g} / {clusters['size_max']}"
        table.add_row("cluster size min / median / max", sizes)
    Console(stderr=True).print(table)
