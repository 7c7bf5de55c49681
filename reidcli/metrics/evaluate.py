"""Features in, metrics out: distances or re-ranking, streamed over query chunks, then scored.

The options come from the recipe's own `eval` section (`reidcli.recipe.run.Eval`); its schema
holds the only defaults. Numpy only: neither torch nor scipy is imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reidcli.errors import UsageError
from reidcli.metrics.cuhk03 import single_shot_cmc
from reidcli.metrics.distance import iter_distance_chunks
from reidcli.metrics.features import Features, Labels, check_scorable
from reidcli.metrics.rank import MAX_RANK, GalleryIndex, QueryScores, score_block, summarize
from reidcli.metrics.rank import top_k as ranked_top_k
from reidcli.recipe.run import Eval
from reidcli.results import METRIC_KEYS

# Keys of the documented JSON result (also under "reranked"), defined with the results.
PUBLIC_KEYS = METRIC_KEYS


@dataclass(frozen=True)
class Evaluation:
    """A full evaluation.

    Attributes:
        metrics: The result of `evaluate_features`.
        scores: Per-query scores of the final ranking (re-ranked when re-ranking ran).
        top: (Q, top_k) gallery indices of the final ranking, same-identity same-camera items
            removed; None when top_k was 0.
    """

    metrics: dict
    scores: QueryScores
    top: np.ndarray | None


def _score_stream(
    blocks: Iterator[tuple[int, np.ndarray]], query: Labels, gallery: Labels, top_k: int, rng
) -> tuple[QueryScores, np.ndarray | None, np.ndarray | None]:
    """Score (start, block) chunks; optionally keep top-k lists and single-shot CMC curves."""
    index = GalleryIndex(gallery)
    parts, tops, curves = [], [], []
    for start, block in blocks:
        rows = query[start : start + block.shape[0]]
        parts.append(score_block(block, rows, index))
        if top_k:
            tops.append(ranked_top_k(block, rows, gallery, top_k))
        if rng is not None:
            curves.append(single_shot_cmc(block, rows, gallery, rng, min(MAX_RANK, len(gallery))))
    return (
        QueryScores.concat(parts),
        np.concatenate(tops) if top_k else None,
        np.concatenate(curves) if rng is not None else None,
    )


def _written(blocks, path, shape) -> Iterator[tuple[int, np.ndarray]]:
    """Pass blocks through while writing them into a (Q, G) float32 `.npy` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    for start, block in blocks:
        out[start : start + block.shape[0]] = block
        yield start, block
    out.flush()
    del out


def _summary(scores, curves, num_gallery, ranks, q_camids) -> dict:
    out = summarize(scores, num_gallery, ranks, q_camids=q_camids)
    if curves is not None and scores.valid.any():
        # CUHK03 classic: CMC from the single-gallery-shot curves, mAP as Market
        cmc = curves[scores.valid].mean(0)
        out["cmc"] = [float(v) for v in cmc]
        for k in ranks:
            out[f"rank{k}"] = float(cmc[min(k, len(cmc)) - 1])
    return out


def run_evaluation(
    features: Features,
    cfg: Eval,
    *,
    top_k: int = 0,
    rerank_out: str | Path | None = None,
) -> Evaluation:
    """Evaluate embeddings with the options of a recipe's `eval` section.

    Uses `cfg.distance`, `cfg.ranks`, `cfg.protocol` with `cfg.seed`, and
    `cfg.query_expansion` (applied before scoring) and `cfg.rerank` (reported under
    `reranked`) when enabled. The work is chunked
    over queries, so MSMT17-sized problems fit in memory.

    Args:
        features: Validated query and gallery embeddings and labels (`as_features`,
            `load_features`).
        cfg: The evaluation options.
        top_k: When > 0, also keep each query's top-k gallery indices of the final ranking.
        rerank_out: When re-ranking, also write the (Q, G) float32 re-ranked distances to this
            `.npy` file, block by block.

    Returns:
        The `Evaluation`; see `evaluate_features` for its metrics.

    Raises:
        FeaturesError: no query can be scored (see `check_scorable`).
        UsageError: re-ranking asks for more neighbours than the query and gallery hold.
    """
    check_scorable(features)
    query, gallery = features.query, features.gallery
    qf, gf = features.query_features, features.gallery_features
    ranks, num_g = cfg.ranks, len(gallery)
    qe = cfg.query_expansion
    if qe.enabled:
        from reidcli.metrics.query_expansion import expand_queries

        qf = expand_queries(qf, gf, k=qe.k, alpha=qe.alpha)

    def new_rng():
        return np.random.default_rng(cfg.seed) if cfg.protocol == "cuhk03" else None

    rr = cfg.rerank
    if rr.enabled:
        _check_rerank(rr, len(query) + num_g)
    blocks = iter_distance_chunks(qf, gf, cfg.distance)
    scores, top, curves = _score_stream(
        blocks, query, gallery, 0 if rr.enabled else top_k, new_rng()
    )
    metrics = _summary(scores, curves, num_g, ranks, query.camids)
    metrics |= {"distance": cfg.distance, "protocol": cfg.protocol}
    if qe.enabled:
        metrics["query_expansion"] = qe.model_dump(exclude={"enabled"})
    if rr.enabled:
        from reidcli.metrics.rerank import iter_rerank  # imported only when re-ranking

        blocks = iter_rerank(qf, gf, k1=rr.k1, k2=rr.k2, lambda_=rr.lambda_, metric=cfg.distance)
        if rerank_out is not None:
            blocks = _written(blocks, rerank_out, (len(query), num_g))
        scores, top, curves = _score_stream(blocks, query, gallery, top_k, new_rng())
        metrics["reranked"] = _summary(scores, curves, num_g, ranks, query.camids)
        metrics["reranked"]["params"] = rr.model_dump(by_alias=True, exclude={"enabled"})
    return Evaluation(metrics, scores, top)


def _check_rerank(rr, items: int) -> None:
    """k-reciprocal re-ranking looks at each item's k1 + 1 nearest of all query and gallery
    items, and averages over k2 of them."""
    if max(rr.k1 + 1, rr.k2) > items:
        raise UsageError(
            f"re-ranking with k1={rr.k1}, k2={rr.k2} needs at least {max(rr.k1 + 1, rr.k2)} query "
            f"and gallery items; these features have {items}: lower k1 to at most {items - 1} "
            f"and k2 to at most {items} (eval.rerank.k1, eval.rerank.k2)"
        )


def evaluate_features(features: Features, cfg: Eval | None = None) -> dict:
    """Market-1501 (or CUHK03 classic) metrics of query and gallery embeddings.

    Args:
        features: Validated embeddings and labels; `as_features` converts numpy arrays or
            torch tensors (any device, any float dtype).
        cfg: The recipe's `eval` section; None for the schema's defaults (cosine, ranks 1, 5,
            10, 20, Market protocol, no re-ranking, no query expansion).

    Returns:
        `rank{k}`, `mAP`, `mINP`, `num_query` (queries used), `num_skipped`, `cmc` (curve to
        rank 50), `per_camera`, `distance`, `protocol`; `query_expansion` (its k and alpha)
        when enabled; and under `reranked` the same metrics of the re-ranked distances, with
        `params` (k1, k2, lambda), when re-ranking is enabled.
    """
    return run_evaluation(features, Eval() if cfg is None else cfg).metrics
