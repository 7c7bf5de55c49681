"""`reid eval`: metrics of saved features (Market-1501 protocol, optional re-ranking)."""

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer


class Distance(StrEnum):
    cosine = "cosine"
    euclidean = "euclidean"


class Protocol(StrEnum):
    market = "market"
    cuhk03 = "cuhk03"


FEATURES_HELP = (
    "Features .npz (query/gallery features, pids, camids; optional paths); no model needed."
)


def rerank_options(k1: int, k2: int, lambda_: float) -> dict:
    """The re-ranking option mapping the library takes."""
    return {"k1": k1, "k2": k2, "lambda_": lambda_}


def print_result(metrics: dict, as_json: bool, title: str) -> None:
    """Tables on stderr; with `as_json`, the documented JSON document on stdout."""
    from reidcli.metrics.evaluate import public_metrics
    from reidcli.metrics.report import render_metrics

    render_metrics(metrics, title=title)
    if as_json:
        doc = public_metrics(metrics)
        for key in ("figures",):
            if key in metrics:
                doc[key] = metrics[key]
        if "out" in metrics.get("reranked", {}):
            doc["reranked"]["out"] = metrics["reranked"]["out"]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def eval_cmd(
    features: Path | None = typer.Option(None, "--features", help=FEATURES_HELP),
    rerank: bool = typer.Option(False, "--rerank", help="Also report k-reciprocal re-ranking."),
    k1: int = typer.Option(20, "--k1", min=1, help="Re-ranking: k-reciprocal neighbours."),
    k2: int = typer.Option(6, "--k2", min=1, help="Re-ranking: local query expansion size."),
    lambda_: float = typer.Option(
        0.3, "--lambda", min=0.0, max=1.0, help="Re-ranking: weight of the original distance."
    ),
    distance: Distance = typer.Option(Distance.cosine, "--distance", help="Distance."),
    query_expansion: bool = typer.Option(
        False, "--query-expansion", help="α-weighted average query expansion before scoring."
    ),
    qe_k: int = typer.Option(5, "--qe-k", min=1, help="Query expansion: gallery neighbours."),
    qe_alpha: float = typer.Option(3.0, "--qe-alpha", min=0.0, help="Query expansion: α."),
    protocol: Protocol = typer.Option(
        Protocol.market, "--protocol", help="cuhk03: classic single-gallery-shot CMC (seeded)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the cuhk03 gallery draws."),
    visualize: int = typer.Option(
        0, "--visualize", min=0, help="Write ranked lists of the N worst and best queries + CMC."
    ),
    vis_dir: Path | None = typer.Option(
        None, "--vis-dir", help="Folder for --visualize PNGs (default: beside the features file)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Evaluate query/gallery features: rank-1/5/10/20, mAP, mINP (Market-1501 protocol)."""
    if features is None:
        raise typer.BadParameter(
            "a features file is required: reid eval --features FILE.npz", param_hint="--features"
        )
    from reidcli import api

    try:
        metrics = api.evaluate_features_file(
            features,
            distance=distance.value,
            rerank=rerank_options(k1, k2, lambda_) if rerank else None,
            query_expansion={"k": qe_k, "alpha": qe_alpha} if query_expansion else None,
            protocol=protocol.value,
            seed=seed,
            visualize=visualize,
            visualize_dir=vis_dir,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    print_result(metrics, as_json, title=f"evaluation of {features.name}")
    for path in metrics.get("figures", []):
        print(f"wrote {path}", file=sys.stderr)
