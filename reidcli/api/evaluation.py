"""Scoring: `reid eval` (a model, a features file, or a features file against an index) and
`reid rerank`."""

from __future__ import annotations

from pathlib import Path

from reidcli.api.overrides import Overrides, as_overrides
from reidcli.devices import check_device
from reidcli.reporting import Reporter


def evaluate(
    target: str | Path | None = None,
    *,
    features: str | Path | None = None,
    recipe: str | Path | None = None,
    overrides: Overrides = (),
    split: str = "test",
    save_features: str | Path | None = None,
    visualize: int = 0,
    visualize_dir: str | Path | None = None,
    device: str = "auto",
    runs_dir: str | Path = "runs",
    index: str | Path | None = None,
    index_topk: int = 100,
    nprobe: int | None = None,
    ef_search: int | None = None,
    backend: str = "faiss",
    uri: str | None = None,
    reporter: Reporter | None = None,
) -> dict:
    """Evaluate a trained model on a prepared dataset, or saved features without a model.

    Every evaluation option lives in the recipe's `eval` section (distance, ranks, protocol,
    flip, rerank, query_expansion, seed): the run's recipe for a model, the schema defaults (or
    `recipe`) for a features file, then `overrides`, e.g. `{"eval.rerank.enabled": True}`.
    `data.*` overrides evaluate a run on another prepared dataset (cross-domain); `model.*`
    cannot change. A features file is scored with the `eval` section only, so its overrides
    must be `eval.*` keys.

    Args:
        target: a run folder (its best.pt, else last.pt), a checkpoint, or None for the newest
            run under `runs_dir`. Not with `features`.
        features: a features `.npz` file to score instead of running a model.
        recipe: the recipe of a weights file that carries none (a LightMBN checkpoint); with
            `features`, the recipe whose `eval` section applies.
        overrides: recipe values that win (see `Overrides`).
        split: "test" (query/gallery) or "val" (the validation identities).
        save_features: write the extracted features (with image paths) to this `.npz`.
        visualize: write ranked lists of that many worst and best queries and the CMC curve as
            PNGs to `visualize_dir` (default: beside the run or features file).
        device: where the model runs (auto, cpu or cuda); the precision is `eval.amp`.
        index: with `features`, score its queries against this gallery index (`index_build`)
            from the index's top `index_topk` instead of the dense matrix; a true match the
            index misses counts as ranked last. `nprobe`/`ef_search` set the search breadth,
            `backend`/`uri` select Milvus. The result gains `index` (kind, topk, search,
            matches found) and, when the file's gallery is the index's rows, `exact` (the
            dense evaluation) to compare with.
        reporter: progress of the embedding (silent when None).

    Returns:
        The metrics (see `reidcli.metrics.evaluate.evaluate_features`), with `checkpoint`,
        `split`, `data_root` and `eval_json` for a model, `features_file` when saved, and
        `figures` when drawn. A model's metrics are also written beside its checkpoint: one
        file per prepared dataset and split (`eval.json` for the run's own test split).
    """
    check_device(device)
    from reidcli.engine.evaluation import EvalRequest, evaluate_target

    request = EvalRequest(
        target=target, features=features, recipe=recipe, overrides=as_overrides(overrides),
        split=split, save_features=save_features, visualize=visualize,
        visualize_dir=visualize_dir, device=device, runs_dir=runs_dir, index=index,
        index_topk=index_topk, nprobe=nprobe, ef_search=ef_search, backend=backend, uri=uri,
    )  # fmt: skip
    return evaluate_target(request, reporter or Reporter())


def rerank(
    features_path: str | Path,
    *,
    recipe: str | Path | None = None,
    overrides: Overrides = (),
    out: str | Path | None = None,
) -> dict:
    """k-reciprocal re-ranking of a features file: metrics before and after (under `reranked`).

    The options are the recipe's `eval.rerank` (k1, k2, lambda) and `eval.distance`: schema
    defaults, then `recipe`, then `overrides` (`eval.*` keys only, e.g.
    `{"eval.rerank.k1": 30}`). With `out`, the (Q, G) float32 re-ranked distances are written
    there as `.npy`, streamed block by block.
    """
    from reidcli.metrics.evaluate import run_evaluation
    from reidcli.metrics.features import load_features
    from reidcli.outputs import check_output_file
    from reidcli.recipe import load_eval

    if out is not None:
        check_output_file(out, "re-ranked distances file")
    cfg = load_eval(recipe, as_overrides(overrides))
    cfg = cfg.model_copy(update={"rerank": cfg.rerank.model_copy(update={"enabled": True})})
    result = run_evaluation(load_features(features_path), cfg, rerank_out=out)
    if out is not None:
        result.metrics["reranked"]["out"] = str(out)
    return result.metrics
