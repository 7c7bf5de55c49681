"""`reid eval`: score saved features, or a trained model's features of a prepared split."""

import json
import logging
from pathlib import Path

from reidcli.errors import FeaturesError, RecipeError

log = logging.getLogger(__name__)


def evaluate_target(
    target=None,
    *,
    features=None,
    recipe=None,
    split="test",
    flip=None,
    distance=None,
    ranks=None,
    rerank=None,
    query_expansion=None,
    protocol="market",
    seed=0,
    save_features=None,
    visualize=0,
    visualize_dir=None,
    device="auto",
    amp=None,
    runs_dir="runs",
) -> dict:
    """See `reidcli.api.evaluate`."""
    from reidcli.metrics.evaluate import run_evaluation
    from reidcli.metrics.features import load_features
    from reidcli.metrics.features import save_features as write_features
    from reidcli.recipe.run import Eval

    if split not in ("test", "val"):
        raise RecipeError(f"--split must be test or val, got {split!r}")
    if features is not None:
        if target is not None:
            raise RecipeError("give either a run/checkpoint or --features, not both")
        feats, out_dir, checkpoint = load_features(features), Path(features).parent, None
        eval_cfg = Eval()  # a features file has no recipe: the schema's defaults
    else:
        feats, eval_cfg, checkpoint = _model_features(
            target, recipe, split, flip, device, amp, runs_dir
        )
        out_dir = checkpoint.parent
    if save_features is not None:
        write_features(
            save_features, feats.query_features, feats.gallery_features, feats.query_pids,
            feats.gallery_pids, feats.query_camids, feats.gallery_camids, feats.query_paths,
            feats.gallery_paths,
        )  # fmt: skip
    if visualize and not feats.has_paths:
        raise FeaturesError(f"{features}: --visualize needs query_paths and gallery_paths")
    cfg = _eval_options(eval_cfg, distance, ranks, rerank, query_expansion, protocol)
    result = run_evaluation(feats, cfg, seed=seed, top_k=10 if visualize else 0)
    metrics = result.metrics
    if save_features is not None:
        metrics["features_file"] = str(save_features)
    if visualize:
        metrics["figures"] = _draw(result, feats, visualize, visualize_dir, out_dir, features)
    if checkpoint is not None:
        metrics["checkpoint"], metrics["split"] = str(checkpoint), split
        path = out_dir / ("eval.json" if split == "test" else "eval_val.json")
        path.write_text(json.dumps(metrics, indent=2, default=_plain) + "\n")
        metrics["eval_json"] = str(path)
    return metrics


def _eval_options(base, distance, ranks, rerank, query_expansion, protocol):
    """The `eval` section with the given overrides (None keeps the section's value)."""
    from reidcli.recipe.run import Eval

    update = {"rerank": _section(base.rerank, rerank)}
    update["query_expansion"] = _section(base.query_expansion, query_expansion)
    for key, value in (("distance", distance), ("ranks", ranks), ("protocol", protocol)):
        if value is not None:
            update[key] = value
    return Eval.model_validate({**base.model_dump(by_alias=True), **update})


def _section(section, value):
    """A rerank/query_expansion section overridden by True/False (switch it), a section model
    (use it), or a mapping of some of its options (validated by the schema; enables it)."""
    if value is None:
        return section
    if isinstance(value, bool):
        return section.model_copy(update={"enabled": value})
    if isinstance(value, type(section)):
        return value
    given = type(section).model_validate({"enabled": True, **value})
    return section.model_copy(
        update={name: getattr(given, name) for name in given.model_fields_set}
    )


def _model_features(target, recipe_path, split, flip, device, amp, runs_dir):
    from reidcli.engine.inference import embed_split, find_checkpoint, load_trained_model
    from reidcli.engine.runtime import Runtime

    checkpoint = find_checkpoint(target, runs_dir)
    model, recipe = load_trained_model(checkpoint, recipe_path)
    if flip is not None:
        recipe = recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"flip": flip})})
    runtime = Runtime.from_env(
        device, amp or recipe.train.amp, recipe.train.channels_last, recipe.train.seed
    )
    feats = embed_split(model, recipe, split, runtime)
    return feats, recipe.eval, checkpoint


def _draw(result, feats, count, folder, out_dir, features) -> list[str]:
    from reidcli.metrics.visualize import save_cmc_curve, save_ranked_lists

    if folder is None:
        stem = Path(features).stem if features is not None else "eval"
        folder = out_dir / f"{stem}_visualize"
    figures = save_ranked_lists(Path(folder), feats, result, count)
    figures.append(save_cmc_curve(Path(folder) / "cmc.png", result.metrics))
    return [str(p) for p in figures]


def _plain(value):
    """JSON for numpy scalars and arrays in the metrics."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
