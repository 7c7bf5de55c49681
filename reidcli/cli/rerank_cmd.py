"""`reid rerank`: k-reciprocal re-ranking of saved features, metrics before and after."""

from pathlib import Path

import typer

from reidcli.cli.eval_cmd import (
    Distance,
    distance_option,
    k1_option,
    k2_option,
    lambda_option,
)
from reidcli.cli.options import SET_HELP, build, json_option, option, recipe_overrides
from reidcli.recipe.options import RerankOptions


def rerank_cmd(
    features: Path = typer.Argument(..., help="Features .npz file."),
    k1: int | None = k1_option(),
    k2: int | None = k2_option(),
    lambda_: float | None = lambda_option(),
    distance: Distance | None = distance_option(),
    recipe: Path | None = option(RerankOptions, "recipe", "--recipe"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path | None = option(RerankOptions, "out", "--out"),
    as_json: bool = json_option(),
) -> None:
    """Re-rank saved features (Zhong et al. 2017) and print the metrics before and after."""
    from reidcli import api
    from reidcli.cli.metrics_table import render_result

    flags = recipe_overrides(rerank_cmd, locals())
    options = build(RerankOptions, {"recipe": recipe, "out": out})
    result = api.rerank(features, options, overrides=[*flags, *overrides])
    render_result(result, as_json, title=f"re-ranking of {features.name}")
