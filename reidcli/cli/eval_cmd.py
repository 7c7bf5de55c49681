"""`reid eval`: metrics of a trained model or of saved features (Market-1501 protocol)."""

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer


class Distance(StrEnum):
    cosine = "cosine"
    euclidean = "euclidean"


class Split(StrEnum):
    test = "test"
    val = "val"


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
    target: Path | None = typer.Argument(
        None, help="Run folder (best.pt, else last.pt) or checkpoint; default: newest under runs/."
    ),
    features: Path | None = typer.Option(None, "--features", help=FEATURES_HELP),
    recipe: Path | None = typer.Option(
        None, "--recipe", help="Recipe of a weights file that carries none (LightMBN .pth)."
    ),
    split: Split = typer.Option(
        Split.test, "--split", help="test: query/gallery; val: held-out ids."
    ),
    flip: bool | None = typer.Option(
        None, "--flip/--no-flip", help="Flip test-time augmentation (default: the recipe's)."
    ),
    save_features: Path | None = typer.Option(
        None, "--save-features", help="Write the extracted features to this .npz file."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    rerank: bool = typer.Option(False, "--rerank", help="Also report k-reciprocal re-ranking."),
    k1: int = typer.Option(20, "--k1", min=1, help="Re-ranking: k-reciprocal neighbours."),
    k2: int = typer.Option(6, "--k2", min=1, help="Re-ranking: local query expansion size."),
    lambda_: float = typer.Option(
        0.3, "--lambda", min=0.0, max=1.0, help="Re-ranking: weight of the original distance."
    ),
    distance: Distance | None = typer.Option(
        None, "--distance", help="Distance (default: the recipe's; cosine for --features)."
    ),
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
    """Evaluate a trained model or saved features: rank-1/5/10/20, mAP, mINP."""
    from reidcli import api

    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter(
            f"must be auto, cpu or cuda, got {device!r}", param_hint="--device"
        )
    try:
        metrics = api.evaluate(
            target,
            features=features,
            recipe=recipe,
            split=split.value,
            flip=flip,
            distance=distance.value if distance else None,
            rerank=rerank_options(k1, k2, lambda_) if rerank else None,
            query_expansion={"k": qe_k, "alpha": qe_alpha} if query_expansion else None,
            protocol=protocol.value,
            seed=seed,
            save_features=save_features,
            visualize=visualize,
            visualize_dir=vis_dir,
            device=device,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    source = features.name if features else metrics.get("checkpoint", "")
    print_result(metrics, as_json, title=f"evaluation of {source}")
    for key in ("features_file", "eval_json"):
        if key in metrics:
            print(f"wrote {metrics[key]}", file=sys.stderr)
    for path in metrics.get("figures", []):
        print(f"wrote {path}", file=sys.stderr)
