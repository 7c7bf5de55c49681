"""`reid rerank`: k-reciprocal re-ranking of saved features, metrics before and after."""

from pathlib import Path

import typer

from reidcli.cli.eval_cmd import (
    Distance,
    _distance_option,
    _k1_option,
    _k2_option,
    _lambda_option,
    flag_overrides,
    print_result,
)
from reidcli.cli.recipe_cmd import SET_HELP


def rerank_cmd(
    features: Path = typer.Argument(..., help="Features .npz file."),
    k1: int | None = _k1_option(),
    k2: int | None = _k2_option(),
    lambda_: float | None = _lambda_option(),
    distance: Distance | None = _distance_option(),
    recipe: Path | None = typer.Option(
        None, "--recipe", help="Take eval.rerank and eval.distance from this recipe."
    ),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path | None = typer.Option(
        None, "--out", help="Write the (Q, G) float32 re-ranked distances to this .npy file."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Re-rank saved features (Zhong et al. 2017) and print the metrics before and after."""
    from reidcli import api

    flags = flag_overrides(k1=k1, k2=k2, lambda_=lambda_, distance=distance)
    metrics = api.rerank(features, recipe=recipe, overrides=[*flags, *overrides], out=out)
    print_result(metrics, as_json, title=f"re-ranking of {features.name}")
