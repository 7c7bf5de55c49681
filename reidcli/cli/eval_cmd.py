"""`reid eval`: metrics of a trained model or of saved features (Market-1501 protocol).

How evaluation scores is the recipe's `eval` section: each such flag (`recipe_option`) defaults
to "not given" and, when given, becomes a recipe override (`--k1 N` is `--set
eval.rerank.k1=N`). What is
evaluated and where results go is `EvalOptions`. Every default in the help is read from those
models.
"""

from pathlib import Path

import typer

from reidcli.cli.options import (
    SET_HELP,
    build,
    choices,
    json_option,
    option,
    parse_fars,
    quiet_option,
    recipe_option,
    recipe_overrides,
)
from reidcli.recipe.options import EvalOptions
from reidcli.recipe.run import Eval

INDEX = "Gallery index"
OPEN = "Open set"
Device = choices(EvalOptions, "device")
Runner = choices(EvalOptions, "runner")
Split = choices(EvalOptions, "split")
Distance = choices(Eval, "distance")
Protocol = choices(Eval, "protocol")
Backend = choices(EvalOptions, "backend")

FLAGS = {"visualize_dir": "--vis-dir"}


def k1_option():
    return recipe_option("eval.rerank.k1", "--k1")


def k2_option():
    return recipe_option("eval.rerank.k2", "--k2")


def lambda_option():
    return recipe_option("eval.rerank.lambda", "--lambda")


def distance_option():
    return recipe_option("eval.distance", "--distance")


def eval_cmd(
    target: Path | None = typer.Argument(
        None, help="Run folder (best.pt, else last.pt) or checkpoint; default: newest under runs/."
    ),
    features: Path | None = option(EvalOptions, "features", "--features"),
    recipe: Path | None = option(EvalOptions, "recipe", "--recipe"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    split: Split | None = option(EvalOptions, "split", "--split"),
    flip: bool | None = recipe_option("eval.flip", "--flip/--no-flip"),
    save_features: Path | None = option(EvalOptions, "save_features", "--save-features"),
    device: Device | None = option(EvalOptions, "device", "--device"),
    runner: Runner | None = option(EvalOptions, "runner", "--runner"),
    rerank: bool | None = recipe_option("eval.rerank.enabled", "--rerank/--no-rerank"),
    k1: int | None = k1_option(),
    k2: int | None = k2_option(),
    lambda_: float | None = lambda_option(),
    distance: Distance | None = distance_option(),
    query_expansion: bool | None = recipe_option(
        "eval.query_expansion.enabled", "--query-expansion/--no-query-expansion"
    ),
    qe_k: int | None = recipe_option("eval.query_expansion.k", "--qe-k"),
    qe_alpha: float | None = recipe_option("eval.query_expansion.alpha", "--qe-alpha"),
    protocol: Protocol | None = recipe_option("eval.protocol", "--protocol"),
    seed: int | None = recipe_option("eval.seed", "--seed"),
    visualize: int | None = option(EvalOptions, "visualize", "--visualize"),
    vis_dir: Path | None = option(EvalOptions, "visualize_dir", "--vis-dir"),
    index: str | None = option(EvalOptions, "index", "--index", rich_help_panel=INDEX),
    index_topk: int | None = option(
        EvalOptions, "index_topk", "--index-topk", rich_help_panel=INDEX
    ),
    nprobe: int | None = option(EvalOptions, "nprobe", "--nprobe", rich_help_panel=INDEX),
    ef_search: int | None = option(EvalOptions, "ef_search", "--ef-search", rich_help_panel=INDEX),
    backend: Backend | None = option(EvalOptions, "backend", "--backend", rich_help_panel=INDEX),
    uri: str | None = option(EvalOptions, "uri", "--uri", rich_help_panel=INDEX),
    open_set: bool | None = option(
        EvalOptions, "open_set", "--open-set/--closed-set", rich_help_panel=OPEN
    ),
    unknown_ids: int | None = option(
        EvalOptions, "unknown_ids", "--unknown-ids", rich_help_panel=OPEN
    ),
    calibration: Path | None = option(
        EvalOptions, "calibration", "--calibration", rich_help_panel=OPEN
    ),
    far: str | None = option(
        EvalOptions, "far", "--far", callback=parse_fars, rich_help_panel=OPEN
    ),
    quiet: bool = quiet_option(),
    as_json: bool = json_option(),
) -> None:
    """Evaluate a trained model or saved features: rank-1/5/10/20, mAP, mINP.

    `--set data.root=DIR` evaluates a run on another prepared dataset (cross-domain); its result
    is written to eval_<DIR name>.json beside the checkpoint.
    """
    import sys

    from reidcli import api
    from reidcli.cli.metrics_table import render_metrics, render_open_set, render_result
    from reidcli.reporting import console_reporter

    flags = recipe_overrides(eval_cmd, locals())
    given = {
        "features": features, "recipe": recipe, "split": split, "save_features": save_features,
        "device": device, "visualize": visualize, "visualize_dir": vis_dir, "index": index,
        "index_topk": index_topk, "nprobe": nprobe, "ef_search": ef_search, "backend": backend,
        "uri": uri, "runner": runner, "open_set": open_set, "unknown_ids": unknown_ids,
        "calibration": calibration, "far": far,
    }  # fmt: skip
    options = build(EvalOptions, given, FLAGS)
    result = api.evaluate(
        target, options, overrides=[*flags, *overrides], reporter=console_reporter(quiet)
    )
    source = features.name if features else result.checkpoint or ""
    if options.index is not None:
        source += f" against {options.index} (top-{options.index_topk})"
        if result.exact is not None:
            render_metrics(result.exact, title="exact (dense distances)")
    render_result(result, as_json, title=f"evaluation of {source}")
    if result.open_set is not None:
        render_open_set(result.open_set)
    if not quiet:
        for path in (result.features_file, result.eval_json, *result.figures):
            if path is not None:
                print(f"wrote {path}", file=sys.stderr)
