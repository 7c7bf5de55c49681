"""`reid eval`: score saved features, or a trained model's features of a prepared split.

This module imports no torch at the top: evaluating a features file never loads it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from reidcli.errors import FeaturesError, RecipeError
from reidcli.outputs import check_output_file
from reidcli.reporting import Reporter

SPLITS = ("test", "val")


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate and where results go (see `reidcli.api.evaluate`)."""

    target: str | Path | None = None
    features: str | Path | None = None
    recipe: str | Path | None = None
    overrides: list[str] = field(default_factory=list)
    split: str = "test"
    save_features: str | Path | None = None
    visualize: int = 0
    visualize_dir: str | Path | None = None
    device: str = "auto"
    runs_dir: str | Path = "runs"
    index: str | Path | None = None
    index_topk: int = 100
    nprobe: int | None = None
    ef_search: int | None = None
    backend: str = "faiss"
    uri: str | None = None


def evaluate_target(request: EvalRequest, reporter: Reporter) -> dict:
    """See `reidcli.api.evaluate`."""
    from reidcli.metrics.evaluate import run_evaluation
    from reidcli.metrics.features import load_features, save_features

    if request.split not in SPLITS:
        raise RecipeError(f"split must be test or val, got {request.split!r}")
    if request.save_features is not None:  # before the embedding, which can take hours
        check_output_file(request.save_features, "features file")
    checkpoint = trained = None
    if request.features is not None:
        if request.target is not None:
            raise RecipeError("give either a run/checkpoint or --features, not both")
        from reidcli.recipe import load_eval

        cfg = load_eval(request.recipe, request.overrides)
        feats, out_dir = load_features(request.features), Path(request.features).parent
    else:
        feats, recipe, trained, checkpoint = _model_features(request, reporter)
        cfg, out_dir = recipe.eval, checkpoint.parent
    if request.save_features is not None:
        save_features(request.save_features, *(getattr(feats, f.name) for f in fields(feats)))
    if request.visualize and not feats.has_paths:
        raise FeaturesError(f"{request.features}: --visualize needs query_paths and gallery_paths")
    if request.index is not None:
        return _index_metrics(request, feats, cfg)
    index_only = {
        "--nprobe": request.nprobe, "--ef-search": request.ef_search, "--uri": request.uri,
        "--backend milvus": request.backend != "faiss" or None,
    }  # fmt: skip
    given = [name for name, value in index_only.items() if value is not None]
    if given:
        raise RecipeError(f"{', '.join(given)} apply to --index")
    result = run_evaluation(feats, cfg, seed=cfg.seed, top_k=10 if request.visualize else 0)
    metrics = result.metrics
    if request.save_features is not None:
        metrics["features_file"] = str(request.save_features)
    if request.visualize:
        metrics["figures"] = _draw(result, feats, request, out_dir)
    if checkpoint is not None:
        metrics |= {"checkpoint": str(checkpoint), "split": request.split}
        metrics["data_root"] = recipe.data.root
        path = out_dir / eval_json_name(trained, recipe, request.split)
        path.write_text(json.dumps(metrics, indent=2, default=_plain) + "\n")
        metrics["eval_json"] = str(path)
    return metrics


def _index_metrics(request: EvalRequest, feats, cfg) -> dict:
    """Metrics from the index's top-K, with the dense evaluation beside them when the features
    file's gallery is the index's."""
    from reidcli.index.evaluate import index_metrics, same_gallery
    from reidcli.index.search import search_params
    from reidcli.index.store import open_gallery
    from reidcli.metrics.evaluate import public_metrics, run_evaluation

    if request.features is None:
        raise RecipeError("--index scores a features file: give --features FEATS.npz")
    if request.visualize or request.save_features is not None:
        raise RecipeError("--index does not combine with --visualize or --save-features")
    gallery = open_gallery(request.index, request.backend, request.uri)
    params = search_params(gallery, request.nprobe, request.ef_search)
    metrics = index_metrics(feats, gallery, cfg, topk=request.index_topk, params=params)
    metrics["index"]["path"] = str(request.index)
    if same_gallery(feats, gallery):
        exact = run_evaluation(feats, cfg.model_copy(update={"distance": gallery.metric}))
        metrics["exact"] = public_metrics(exact.metrics)
    return metrics


def eval_json_name(trained, recipe, split: str) -> str:
    """One result file per prepared dataset and split, beside the checkpoint.

    The run's own dataset keeps `eval.json` (`eval_val.json`); another one (cross-domain
    evaluation with `--set data.root=...`) gets `eval_<folder name>.json`.
    """
    suffix = "" if split == "test" else "_val"
    same = (trained.data.root, trained.data.manifest) == (recipe.data.root, recipe.data.manifest)
    if same:
        return f"eval{suffix}.json"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(recipe.data.root).name).strip("-") or "data"
    return f"eval_{slug}{suffix}.json"


def _model_features(request: EvalRequest, reporter: Reporter):
    from reidcli.engine.inference import embed_split, find_checkpoint, load_trained_model
    from reidcli.engine.runtime import Runtime
    from reidcli.recipe import override_recipe

    checkpoint = find_checkpoint(request.target, request.runs_dir)
    model, trained = load_trained_model(checkpoint, request.recipe)
    recipe = override_recipe(trained, request.overrides, source=f"{checkpoint} recipe + --set")
    if recipe.model != trained.model:
        raise RecipeError(
            "model.* cannot change when evaluating a trained model (the weights fix it)"
        )
    train = recipe.train
    runtime = Runtime.from_env(request.device, recipe.eval.amp, train.channels_last, train.seed)
    feats = embed_split(model, recipe, request.split, runtime, reporter)
    return feats, recipe, trained, checkpoint


def _draw(result, feats, request: EvalRequest, out_dir: Path) -> list[str]:
    from reidcli.metrics.visualize import save_cmc_curve, save_ranked_lists

    folder = request.visualize_dir
    if folder is None:
        stem = Path(request.features).stem if request.features is not None else "eval"
        folder = out_dir / f"{stem}_visualize"
    figures = save_ranked_lists(Path(folder), feats, result, request.visualize)
    figures.append(save_cmc_curve(Path(folder) / "cmc.png", result.metrics))
    return [str(p) for p in figures]


def _plain(value):
    """JSON for numpy scalars and arrays in the metrics."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
