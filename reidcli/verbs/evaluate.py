"""`reid eval` and `reid rerank`: score saved features, or a trained model's features of a
prepared split.

This module imports no torch at the top: evaluating a features file never loads it.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

from reidcli.errors import FeaturesError, RecipeError
from reidcli.outputs import check_output_file, register_output, write_text_atomic
from reidcli.recipe.options import EvalOptions, RerankOptions
from reidcli.reporting import Reporter
from reidcli.results import EvalResult, Metrics, OpenSetResult


def evaluate(target, options: EvalOptions, overrides: list[str], reporter: Reporter) -> EvalResult:
    """See `reidcli.api.evaluate`."""
    from reidcli.metrics.evaluate import run_evaluation
    from reidcli.metrics.features import load_features, save_features

    if options.save_features is not None:  # before the embedding, which can take hours
        check_output_file(options.save_features, "features file")
    checkpoint = trained = None
    if options.features is not None:
        if target is not None:
            raise RecipeError("give either a run/checkpoint or features, not both")
        if options.runner != "auto":
            raise RecipeError("runner applies to a run or checkpoint; features are embedded")
        from reidcli.recipe import load_eval

        cfg = load_eval(options.recipe, overrides)
        feats, out_dir = load_features(options.features), Path(options.features).parent
    else:
        feats, recipe, trained, checkpoint, runner = model_features(
            target, options, overrides, reporter
        )
        cfg, out_dir = recipe.eval, checkpoint.parent
    if options.save_features is not None:
        save_features(
            options.save_features, *(getattr(feats, f.name) for f in fields(feats)),
            model_sha256=_model_sha256(checkpoint, options),
        )  # fmt: skip
    if options.visualize and not feats.has_paths:
        raise FeaturesError(f"{options.features}: visualize needs query_paths and gallery_paths")
    if options.index is not None:
        return _index_metrics(options, feats, cfg)
    result = run_evaluation(feats, cfg, top_k=10 if options.visualize else 0)
    extra: dict = {}
    if options.open_set:
        open_set = _open_set(feats, cfg, options, checkpoint)
        extra["open_set"] = OpenSetResult.from_document(open_set)
    if options.save_features is not None:
        extra["features_file"] = str(options.save_features)
    if options.visualize:
        extra["figures"] = tuple(_draw(result, feats, options, out_dir))
    if checkpoint is not None:
        metrics = result.metrics | {"checkpoint": str(checkpoint), "split": options.split,
                                    "data_root": recipe.data.root, "runner": runner}  # fmt: skip
        if options.open_set:
            metrics["open_set"] = open_set
        path = out_dir / eval_json_name(trained, recipe, options.split)
        write_text_atomic(path, json.dumps(metrics, indent=2, default=_plain) + "\n")
        register_output(out_dir, path.name)
        extra |= {"checkpoint": str(checkpoint), "split": options.split, "runner": runner,
                  "data_root": recipe.data.root, "eval_json": str(path)}  # fmt: skip
    return EvalResult.from_metrics(result.metrics, **extra)


def rerank(features, options: RerankOptions, overrides: list[str]) -> EvalResult:
    """See `reidcli.api.rerank`."""
    from reidcli.metrics.evaluate import run_evaluation
    from reidcli.metrics.features import load_features
    from reidcli.recipe import load_eval

    if options.out is not None:
        check_output_file(options.out, "re-ranked distances file")
    cfg = load_eval(options.recipe, overrides)
    cfg = cfg.model_copy(update={"rerank": cfg.rerank.model_copy(update={"enabled": True})})
    result = run_evaluation(load_features(features), cfg, rerank_out=options.out)
    return EvalResult.from_metrics(result.metrics, reranked_out=options.out)


def _index_metrics(options: EvalOptions, feats, cfg) -> EvalResult:
    """Metrics from the index's top-K, with the dense evaluation beside them when the features
    file's gallery is the index's."""
    from reidcli.index.evaluate import index_metrics, same_gallery
    from reidcli.index.search import search_params
    from reidcli.index.store import open_gallery
    from reidcli.metrics.evaluate import run_evaluation

    if options.features is None:
        raise RecipeError("index scores a features file: give features")
    if options.visualize or options.save_features is not None:
        raise RecipeError("index does not combine with visualize or save_features")
    gallery = open_gallery(options.index, options.backend, options.uri)
    params = search_params(gallery, options.nprobe, options.ef_search)
    metrics = index_metrics(feats, gallery, cfg, topk=options.index_topk, params=params)
    metrics["index"]["path"] = str(options.index)
    exact = None
    if same_gallery(feats, gallery):
        dense = run_evaluation(feats, cfg.model_copy(update={"distance": gallery.metric}))
        exact = Metrics.from_dict(dense.metrics)
    return EvalResult.from_metrics(metrics, index=metrics["index"], exact=exact)


def _model_sha256(checkpoint: Path | None, options: EvalOptions) -> str | None:
    """The checkpoint behind the evaluated features: the one embedded, or the one a features
    file records."""
    if checkpoint is not None:
        from reidcli.export.metadata import file_sha256

        return file_sha256(checkpoint)
    from reidcli.metrics.features import recorded_model

    return recorded_model(options.features) if options.features is not None else None


def _open_set(feats, cfg, options: EvalOptions, checkpoint: Path | None) -> dict:
    """The open-set protocol's figures, with thresholds from a calibration when there is one
    (`options.calibration`, else the run's calibration.json)."""
    from reidcli.metrics.open_set import evaluate_open_set
    from reidcli.verbs.calibrate import CALIBRATION_FILE, read_calibration

    path = options.calibration
    if path is None and checkpoint is not None and (checkpoint.parent / CALIBRATION_FILE).is_file():
        path = str(checkpoint.parent / CALIBRATION_FILE)
    calibrated = None
    if path is not None:
        calibration = read_calibration(path)
        calibration.check_model(
            int(feats.query_features.shape[1]), cfg.distance, _model_sha256(checkpoint, options),
            "the evaluated features",
        )  # fmt: skip
        calibrated = [(level.far, level.threshold) for level in calibration.thresholds]
    doc = evaluate_open_set(
        feats, cfg.distance, options.unknown_ids, cfg.seed, calibrated, options.far
    )
    return doc | {"calibration": path}


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


def model_features(target, options: EvalOptions, overrides: list[str], reporter: Reporter):
    from reidcli.engine.checkpoint import find_checkpoint
    from reidcli.engine.runtime import Runtime
    from reidcli.inference.checkpoints import embed_split, load_trained_model, split_size
    from reidcli.inference.runners import RunnerModel
    from reidcli.recipe import override_recipe
    from reidcli.verbs import backend

    checkpoint = find_checkpoint(target, options.runs_dir)
    model, trained = load_trained_model(checkpoint, options.recipe)
    recipe = override_recipe(trained, overrides, source=f"{checkpoint} recipe + --set")
    if recipe.model != trained.model:
        raise RecipeError(
            "model.* cannot change when evaluating a trained model (the weights fix it)"
        )
    train = recipe.train
    runtime = Runtime.from_env(options.device, recipe.eval.amp, train.channels_last, train.seed)
    count = split_size(recipe, options.split)
    runner = backend.onnx_runner(
        options.runner, checkpoint, recipe, options.recipe, options.device, count, reporter
    )
    if runner is not None:
        model = RunnerModel(runner)
    feats = embed_split(model, recipe, options.split, runtime, reporter)
    return feats, recipe, trained, checkpoint, "pytorch" if runner is None else runner.backend


def _draw(result, feats, options: EvalOptions, out_dir: Path) -> list[str]:
    from reidcli.metrics.visualize import save_cmc_curve, save_ranked_lists

    folder = options.visualize_dir
    if folder is None:
        stem = Path(options.features).stem if options.features is not None else "eval"
        folder = out_dir / f"{stem}_visualize"
    figures = save_ranked_lists(Path(folder), feats, result, options.visualize)
    figures.append(save_cmc_curve(Path(folder) / "cmc.png", result.metrics))
    return [str(p) for p in figures]


def _plain(value):
    """JSON for numpy scalars and arrays in the metrics."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
