"""One function per verb, with typed arguments; the CLI is a thin skin over these.

Importing this module does not import torch; each verb imports what it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reidcli.engine.trainer import TrainResult
    from reidcli.recipe import Recipe


def prepare(
    dataset: str,
    root: str | Path | None = None,
    out: str | Path | None = None,
    *,
    val_ids: int = 0,
    seed: int = 0,
    verify: bool = True,
    strict: bool = False,
    ids: int = 100,
    cams: int = 6,
    images_per_id: int = 8,
    size: tuple[int, int] = (128, 64),
    workers: int | None = None,
) -> dict:
    """Prepare a dataset into `out` (manifest.csv, dataset.json) and return its description.

    `ids`, `cams`, `images_per_id` and `size` (height, width) shape the `synthetic` dataset,
    generated with `seed`. See `reidcli.data.prepare.prepare`.
    """
    from reidcli.data.prepare import prepare as run_prepare
    from reidcli.data.synthetic import SyntheticSpec

    spec = SyntheticSpec(ids, cams, images_per_id, size[0], size[1], seed)
    return run_prepare(
        dataset, root, out, val_ids=val_ids, seed=seed, verify=verify, strict=strict,
        synthetic=spec, workers=workers,
    )  # fmt: skip


def train(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    resume_from: str | Path | None = None,
    device: str = "auto",
) -> TrainResult:
    """Train as the recipe describes, writing checkpoints and logs to `out_dir`.

    See `reidcli.engine.trainer.train`.
    """
    from reidcli.engine.trainer import train as run_training

    return run_training(recipe, out_dir, resume_from=resume_from, device=device)


def evaluate_features_file(
    features_path: str | Path,
    *,
    distance: str = "cosine",
    ranks: tuple[int, ...] = (1, 5, 10, 20),
    rerank: dict | bool | None = None,
    query_expansion: dict | bool | None = None,
    protocol: str = "market",
    seed: int = 0,
    visualize: int = 0,
    visualize_dir: str | Path | None = None,
) -> dict:
    """Evaluate a features `.npz` file (no model needed) and return the metrics.

    `rerank` / `query_expansion` take True (defaults) or option mappings (k1, k2, lambda_;
    k, alpha). With `visualize` > 0, ranked lists of that many worst and best queries and the
    CMC curve are written as PNGs to `visualize_dir` (default: `<file stem>_visualize/` beside
    the file) and listed under `figures`. See `reidcli.metrics.evaluate.evaluate_features`.
    """
    from reidcli.metrics.evaluate import run_evaluation
    from reidcli.metrics.features import load_features
    from reidcli.metrics.visualize import save_cmc_curve, save_ranked_lists

    feats = load_features(features_path)
    if visualize and not feats.has_paths:
        from reidcli.errors import FeaturesError

        raise FeaturesError(f"{features_path}: --visualize needs query_paths and gallery_paths")
    result = run_evaluation(
        feats.query_features, feats.gallery_features, feats.query_pids, feats.gallery_pids,
        feats.query_camids, feats.gallery_camids, distance=distance, ranks=ranks, rerank=rerank,
        query_expansion=query_expansion, protocol=protocol, seed=seed,
        top_k=10 if visualize else 0,
    )  # fmt: skip
    metrics = result.metrics
    if visualize:
        path = Path(features_path)
        out_dir = Path(visualize_dir or path.with_name(f"{path.stem}_visualize"))
        figures = save_ranked_lists(out_dir, feats, result, visualize)
        figures.append(save_cmc_curve(out_dir / "cmc.png", metrics))
        metrics["figures"] = [str(p) for p in figures]
    return metrics


def rerank(
    features_path: str | Path,
    k1: int = 20,
    k2: int = 6,
    lambda_: float = 0.3,
    distance: str = "cosine",
    out: str | Path | None = None,
) -> dict:
    """k-reciprocal re-ranking of a features file: metrics before and after (under `reranked`).

    With `out`, the (Q, G) float32 re-ranked distances are written there as `.npy`, streamed
    block by block. See `reidcli.metrics.rerank.iter_rerank`.
    """
    from reidcli.metrics.evaluate import run_evaluation
    from reidcli.metrics.features import load_features

    feats = load_features(features_path)
    result = run_evaluation(
        feats.query_features, feats.gallery_features, feats.query_pids, feats.gallery_pids,
        feats.query_camids, feats.gallery_camids, distance=distance,
        rerank={"k1": k1, "k2": k2, "lambda_": lambda_}, rerank_out=out,
    )  # fmt: skip
    if out is not None:
        result.metrics["reranked"]["out"] = str(out)
    return result.metrics
