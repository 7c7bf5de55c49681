"""`reid rerank`: k-reciprocal re-ranking of saved features, metrics before and after."""

from pathlib import Path

import typer

from reidcli.cli.eval_cmd import Distance, print_result


def rerank_cmd(
    features: Path = typer.Argument(..., help="Features .npz file."),
    k1: int = typer.Option(20, "--k1", min=1, help="k-reciprocal neighbours."),
    k2: int = typer.Option(6, "--k2", min=1, help="Local query expansion size."),
    lambda_: float = typer.Option(
        0.3, "--lambda", min=0.0, max=1.0, help="Weight of the original distance."
    ),
    distance: Distance = typer.Option(Distance.cosine, "--distance", help="Distance."),
    out: Path | None = typer.Option(
        None, "--out", help="Write the (Q, G) float32 re-ranked distances to this .npy file."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Re-rank saved features (Zhong et al. 2017) and print the metrics before and after."""
    from reidcli import api

    try:
        metrics = api.rerank(features, k1, k2, lambda_, distance.value, out)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    print_result(metrics, as_json, title=f"re-ranking of {features.name}")
