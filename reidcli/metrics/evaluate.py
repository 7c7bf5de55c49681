"""Features in, metrics out: distances or re-ranking, streamed over query chunks, then scored."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reidcli.metrics.cuhk03 import single_shot_cmc
from reidcli.metrics.distance import Metric, iter_distance_chunks
from reidcli.metrics.features import as_features
from reidcli.metrics.query_expansion import expand_queries
from reidcli.metrics.rank import MAX_RANK, QueryScores, score_block, summarize
from reidcli.metrics.rerank import iter_rerank

# Keys of the documented JSON result (also under "reranked").
PUBLIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "num_query", "num_skipped")


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


def _options(section, names: tuple[str, ...]) -> dict | None:
    """Options from a recipe section, a mapping or None; None when absent or not enabled."""
    if section is None or section is False:
        return None
    if section is True:
        return {}
    get = section.get if isinstance(section, Mapping) else lambda k, d=None: getattr(section, k, d)
    if not get("enabled", True):
        return None
    picked = {name: get(name) for name in names}
    if picked.get("lambda_") is None and get("lambda") is not None:
        picked["lambda_"] = get("lambda")
    return {k: v for k, v in picked.items() if v is not None}


def _score_stream(
    blocks: Iterator[tuple[int, np.ndarray]], labels: dict, top_k: int, rng
) -> tuple[QueryScores, np.ndarray | None, np.ndarray | None]:
    """Score (start, block) chunks; optionally keep top-k lists and single-shot CMC curves."""
    q_pids, q_cams = labels["query_pids"], labels["query_camids"]
    g_pids, g_cams = labels["gallery_pids"], labels["gallery_camids"]
    parts, tops, curves = [], [], []
    for start, block in blocks:
        sel = slice(start, start + block.shape[0])
        parts.append(score_block(block, q_pids[sel], q_cams[sel], g_pids, g_cams))
        if top_k:
            d = torch.as_tensor(block)
            removed = (torch.as_tensor(q_pids[sel])[:, None] == torch.as_tensor(g_pids)) & (
                torch.as_tensor(q_cams[sel])[:, None] == torch.as_tensor(g_cams)
            )
            k = min(top_k, d.shape[1])
            top = torch.topk(d.masked_fill(removed, float("inf")), k, dim=1, largest=False)
            tops.append(top.indices.numpy())
        if rng is not None:
            length = min(MAX_RANK, block.shape[1])
            args = (q_pids[sel], q_cams[sel], g_pids, g_cams, rng, length)
            curves.append(single_shot_cmc(block, *args))
    scores = QueryScores.concat(parts)
    return (
        scores,
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
    query_features,
    gallery_features,
    query_pids,
    gallery_pids,
    query_camids,
    gallery_camids,
    *,
    distance: Metric = "cosine",
    ranks: Iterable[int] = (1, 5, 10, 20),
    rerank=None,
    query_expansion=None,
    protocol: str = "market",
    seed: int = 0,
    top_k: int = 0,
    rerank_out: str | Path | None = None,
) -> Evaluation:
    """Evaluate embeddings; see `evaluate_features` for the other arguments.

    Args:
        top_k: When > 0, also keep each query's top-k gallery indices of the final ranking.
        rerank_out: When re-ranking, also write the (Q, G) float32 re-ranked distances to this
            `.npy` file, block by block.
    """
    if protocol not in ("market", "cuhk03"):
        raise ValueError(f"unknown protocol {protocol!r}; choose market or cuhk03")
    feats = as_features(
        query_features, gallery_features, query_pids, gallery_pids, query_camids, gallery_camids
    )
    labels = {k: getattr(feats, k) for k in ("query_pids", "query_camids")}
    labels |= {k: getattr(feats, k) for k in ("gallery_pids", "gallery_camids")}
    ranks = tuple(sorted(set(ranks)))
    qf, gf = feats.query_features, feats.gallery_features
    qe = _options(query_expansion, ("k", "alpha"))
    if qe is not None:
        qf = expand_queries(qf, gf, **qe)
    rr = _options(rerank, ("k1", "k2", "lambda_"))

    def new_rng():
        return np.random.default_rng(seed) if protocol == "cuhk03" else None

    num_g = gf.shape[0]
    keep_top = 0 if rr is not None else top_k
    blocks = iter_distance_chunks(qf, gf, distance)
    scores, top, curves = _score_stream(blocks, labels, keep_top, new_rng())
    metrics = _summary(scores, curves, num_g, ranks, feats.query_camids)
    metrics |= {"distance": distance, "protocol": protocol}
    if qe is not None:
        metrics["query_expansion"] = qe
    if rr is not None:
        blocks = iter_rerank(qf, gf, metric=distance, **rr)
        if rerank_out is not None:
            blocks = _written(blocks, rerank_out, (qf.shape[0], num_g))
        scores, top, curves = _score_stream(blocks, labels, top_k, new_rng())
        metrics["reranked"] = _summary(scores, curves, num_g, ranks, feats.query_camids)
        metrics["reranked"]["params"] = {"k1": 20, "k2": 6, "lambda": 0.3} | {
            ("lambda" if k == "lambda_" else k): v for k, v in rr.items()
        }
    return Evaluation(metrics, scores, top)


def evaluate_features(
    query_features,
    gallery_features,
    query_pids,
    gallery_pids,
    query_camids,
    gallery_camids,
    *,
    distance: Metric = "cosine",
    ranks: Iterable[int] = (1, 5, 10, 20),
    rerank=None,
    query_expansion=None,
    protocol: str = "market",
    seed: int = 0,
) -> dict:
    """Market-1501 (or CUHK03 classic) metrics of query and gallery embeddings.

    Features may be numpy arrays or torch tensors (any device); the work is chunked over
    queries, so MSMT17-sized problems fit in memory.

    Args:
        query_features: (Q, D) query embeddings.
        gallery_features: (G, D) gallery embeddings.
        query_pids: (Q,) query person ids.
        gallery_pids: (G,) gallery person ids.
        query_camids: (Q,) query cameras.
        gallery_camids: (G,) gallery cameras.
        distance: "cosine" (1 − cos) or "euclidean" (squared).
        ranks: CMC ranks reported as `rank{k}`.
        rerank: k-reciprocal re-ranking options: None/False (off), True (defaults), a mapping
            or the recipe's `eval.rerank` section (k1, k2, lambda/lambda_, enabled).
        query_expansion: αQE options likewise (k, alpha, enabled); applied before scoring.
        protocol: "market", or "cuhk03" for the classic single-gallery-shot CMC.
        seed: Seed of the CUHK03 gallery draws.

    Returns:
        `rank{k}`, `mAP`, `mINP`, `num_query` (queries used), `num_skipped`, `cmc` (curve to
        rank 50), `per_camera`, `distance`, `protocol`; and under `reranked` the same metrics
        of the re-ranked distances when re-ranking ran.

    Raises:
        FeaturesError: On mismatched lengths, wrong widths or non-finite features.
    """
    return run_evaluation(
        query_features, gallery_features, query_pids, gallery_pids, query_camids,
        gallery_camids, distance=distance, ranks=ranks, rerank=rerank,
        query_expansion=query_expansion, protocol=protocol, seed=seed,
    ).metrics  # fmt: skip


def public_metrics(metrics: dict) -> dict:
    """The documented JSON result: PUBLIC_KEYS, and the same under `reranked` when present."""
    out = {k: metrics[k] for k in PUBLIC_KEYS if k in metrics}
    if "reranked" in metrics:
        out["reranked"] = {
            k: metrics["reranked"][k] for k in PUBLIC_KEYS if k in metrics["reranked"]
        }
    return out
