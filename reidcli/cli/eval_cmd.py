"""`reid eval`: metrics of a trained model or of saved features (Market-1501 protocol).

Evaluation options have one definition: the recipe's `eval` section. Each flag here defaults to
"not given" and, when given, becomes a recipe override (`--k1 N` is `--set eval.rerank.k1=N`);
the defaults shown in the help are read from the schema.
"""

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer

from reidcli.cli.recipe_cmd import SET_HELP, given_flags
from reidcli.devices import DEVICES
from reidcli.recipe.run import Eval, QueryExpansion, Rerank

Device = StrEnum("Device", {name: name for name in DEVICES})
Distance = StrEnum("Distance", {name: name for name in ("cosine", "euclidean")})
Protocol = StrEnum("Protocol", {name: name for name in ("market", "cuhk03")})
IndexBackend = StrEnum("IndexBackend", {name: name for name in ("faiss", "milvus")})
INDEX = "Gallery index"


class Split(StrEnum):
    test = "test"
    val = "val"


# Flag name -> the recipe key it sets.
FLAG_KEYS = {
    "flip": "eval.flip",
    "distance": "eval.distance",
    "protocol": "eval.protocol",
    "seed": "eval.seed",
    "rerank": "eval.rerank.enabled",
    "k1": "eval.rerank.k1",
    "k2": "eval.rerank.k2",
    "lambda_": "eval.rerank.lambda",
    "query_expansion": "eval.query_expansion.enabled",
    "qe_k": "eval.query_expansion.k",
    "qe_alpha": "eval.query_expansion.alpha",
}


def default_of(model, name: str):
    """The schema default of a field (the only place a default is written)."""
    return model.model_fields[name].default


def flag_overrides(**flags) -> list[str]:
    """`KEY=VALUE` overrides for the flags that were given (not None), in FLAG_KEYS order."""
    return given_flags(FLAG_KEYS, flags)


PROTOCOL = default_of(Eval, "protocol")


def print_result(metrics: dict, as_json: bool, title: str) -> None:
    """Tables on stderr; with `as_json`, the documented JSON document on stdout."""
    from reidcli.metrics.evaluate import public_metrics
    from reidcli.metrics.report import render_metrics

    render_metrics(metrics, title=title)
    if as_json:
        doc = public_metrics(metrics)
        for key in ("figures", "checkpoint", "split", "data_root", "index", "exact"):
            if key in metrics:
                doc[key] = metrics[key]
        if "out" in metrics.get("reranked", {}):
            doc["reranked"]["out"] = metrics["reranked"]["out"]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def _k1_option():
    return typer.Option(
        None, "--k1", min=1, help=f"Re-ranking k1 (recipe; default {default_of(Rerank, 'k1')})."
    )


def _k2_option():
    return typer.Option(
        None, "--k2", min=1, help=f"Re-ranking k2 (recipe; default {default_of(Rerank, 'k2')})."
    )


def _lambda_option():
    default = default_of(Rerank, "lambda_")
    return typer.Option(
        None, "--lambda", min=0.0, max=1.0, help=f"Re-ranking λ (recipe; default {default})."
    )


def _distance_option():
    default = default_of(Eval, "distance")
    return typer.Option(None, "--distance", help=f"Distance (recipe; default {default}).")


def eval_cmd(
    target: Path | None = typer.Argument(
        None, help="Run folder (best.pt, else last.pt) or checkpoint; default: newest under runs/."
    ),
    features: Path | None = typer.Option(
        None, "--features", help="Features .npz (query/gallery features, pids, camids)."
    ),
    recipe: Path | None = typer.Option(
        None, "--recipe", help="Recipe of a weights file that carries none (LightMBN .pth)."
    ),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    split: Split = typer.Option(
        Split.test, "--split", help="test: query/gallery; val: held-out ids."
    ),
    flip: bool | None = typer.Option(
        None, "--flip/--no-flip", help="Flip test-time augmentation (recipe)."
    ),
    save_features: Path | None = typer.Option(
        None, "--save-features", help="Write the extracted features to this .npz file."
    ),
    device: Device = typer.Option("auto", "--device", help="Where the model runs."),
    rerank: bool | None = typer.Option(
        None, "--rerank/--no-rerank", help="k-reciprocal re-ranking (recipe; default off)."
    ),
    k1: int | None = _k1_option(),
    k2: int | None = _k2_option(),
    lambda_: float | None = _lambda_option(),
    distance: Distance | None = _distance_option(),
    query_expansion: bool | None = typer.Option(
        None, "--query-expansion/--no-query-expansion", help="αQE before scoring (recipe)."
    ),
    qe_k: int | None = typer.Option(
        None, "--qe-k", min=1, help=f"αQE neighbours (default {default_of(QueryExpansion, 'k')})."
    ),
    qe_alpha: float | None = typer.Option(
        None, "--qe-alpha", min=0.0, help=f"αQE α (default {default_of(QueryExpansion, 'alpha')})."
    ),
    protocol: Protocol | None = typer.Option(
        None,
        "--protocol",
        help=f"market or cuhk03 (recipe; default {PROTOCOL}).",
    ),
    seed: int | None = typer.Option(
        None, "--seed", min=0, help="Seed of the cuhk03 gallery draws (recipe eval.seed)."
    ),
    visualize: int = typer.Option(
        0, "--visualize", min=0, help="Write ranked lists of the N worst and best queries + CMC."
    ),
    vis_dir: Path | None = typer.Option(
        None, "--vis-dir", help="Folder for --visualize PNGs (default: beside the features file)."
    ),
    index: str | None = typer.Option(
        None,
        "--index",
        help="With --features: rank against this gallery index's top-K.",
        rich_help_panel=INDEX,
    ),
    index_topk: int = typer.Option(
        100,
        "--index-topk",
        min=1,
        help="Hits per query taken from the index.",
        rich_help_panel=INDEX,
    ),
    nprobe: int | None = typer.Option(
        None, "--nprobe", min=1, help="IVF-PQ lists searched.", rich_help_panel=INDEX
    ),
    ef_search: int | None = typer.Option(
        None, "--ef-search", min=1, help="HNSW search beam.", rich_help_panel=INDEX
    ),
    backend: IndexBackend = typer.Option(
        "faiss", "--backend", help="Index backend: faiss or milvus.", rich_help_panel=INDEX
    ),
    uri: str | None = typer.Option(
        None, "--uri", help="Milvus server or Milvus Lite file.", rich_help_panel=INDEX
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Evaluate a trained model or saved features: rank-1/5/10/20, mAP, mINP.

    `--set data.root=DIR` evaluates a run on another prepared dataset (cross-domain); its result
    is written to eval_<DIR name>.json beside the checkpoint.
    """
    from reidcli import api
    from reidcli.reporting import console_reporter

    flags = flag_overrides(
        flip=flip, distance=distance, protocol=protocol, seed=seed, rerank=rerank, k1=k1, k2=k2,
        lambda_=lambda_, query_expansion=query_expansion, qe_k=qe_k, qe_alpha=qe_alpha,
    )  # fmt: skip
    metrics = api.evaluate(
        target,
        features=features,
        recipe=recipe,
        overrides=[*flags, *overrides],
        split=split.value,
        save_features=save_features,
        visualize=visualize,
        visualize_dir=vis_dir,
        device=device.value,
        index=index,
        index_topk=index_topk,
        nprobe=nprobe,
        ef_search=ef_search,
        backend=backend.value,
        uri=uri,
        reporter=console_reporter(quiet),
    )
    source = features.name if features else metrics.get("checkpoint", "")
    if index is not None:
        source += f" against {index} (top-{index_topk})"
        if "exact" in metrics:
            from reidcli.metrics.report import render_metrics

            render_metrics(metrics["exact"], title="exact (dense distances)")
    print_result(metrics, as_json, title=f"evaluation of {source}")
    if not quiet:
        for key in ("features_file", "eval_json"):
            if key in metrics:
                print(f"wrote {metrics[key]}", file=sys.stderr)
        for path in metrics.get("figures", []):
            print(f"wrote {path}", file=sys.stderr)
