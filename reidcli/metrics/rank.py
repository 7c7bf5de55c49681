"""CMC, mAP and mINP under the Market-1501 protocol (SPEC §2), vectorised over query chunks.

Instead of sorting every gallery row, each query's true matches are ranked by counting the
gallery items closer than each of them: the match distances are sorted (a handful per query),
every gallery item is bucketed against them with one `searchsorted`, and a cumulative histogram
gives each match's position. Rows where a gallery distance equals a match distance fall back to
a stable sort, so ties are ordered by gallery index exactly as the reference does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

MAX_RANK = 50
# About 64 MiB of int64 per (rows, G) working block.
WORK_ELEMENTS = 1 << 23


@dataclass(frozen=True)
class QueryScores:
    """Per-query results.

    Attributes:
        valid: (Q,) bool, False for skipped queries (no true match left).
        ap: (Q,) float64 average precision (NaN when skipped).
        inp: (Q,) float64 inverse negative penalty (NaN when skipped).
        first_hit: (Q,) int64 0-based position of the first true match (-1 when skipped).
    """

    valid: np.ndarray
    ap: np.ndarray
    inp: np.ndarray
    first_hit: np.ndarray

    @staticmethod
    def concat(parts: Iterable[QueryScores]) -> QueryScores:
        """Join per-chunk scores in query order."""
        parts = list(parts)
        return QueryScores(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in QueryScores.__annotations__)
        )


def _match_positions_by_sort(
    d: torch.Tensor, match: torch.Tensor, n_match: torch.Tensor, m_max: int
) -> torch.Tensor:
    """(R, m_max) 0-based positions of the true matches from a stable sort of each row."""
    order = torch.sort(d, dim=1, stable=True).indices  # (R, G)
    sorted_match = match.gather(1, order)
    rows, pos = sorted_match.nonzero(as_tuple=True)  # row-major: ascending positions per row
    start = torch.cumsum(n_match, 0) - n_match
    slot = torch.arange(rows.numel()) - start[rows]
    out = torch.zeros((d.shape[0], m_max), dtype=torch.int64)
    out[rows, slot] = pos
    return out


def _score_rows(
    d: torch.Tensor, q_pids: torch.Tensor, q_camids: torch.Tensor, g_pids, g_camids
) -> QueryScores:
    """Score one (R, G) block; see `score_block`."""
    same_pid = q_pids[:, None] == g_pids[None, :]  # (R, G)
    junk = same_pid & (q_camids[:, None] == g_camids[None, :])
    match = same_pid & ~junk
    n_match = match.sum(1)  # (R,)
    num = d.shape[0]
    m_max = int(n_match.max()) if num else 0
    if m_max == 0:
        nan = np.full(num, np.nan)
        return QueryScores(np.zeros(num, bool), nan, nan.copy(), np.full(num, -1, np.int64))
    # Removed items go to +inf: behind every (finite) true match, so they never count.
    d = d.masked_fill(junk, float("inf"))
    rows, cols = match.nonzero(as_tuple=True)
    start = torch.cumsum(n_match, 0) - n_match
    slot = torch.arange(rows.numel()) - start[rows]
    thresholds = torch.full((num, m_max), float("inf"), dtype=d.dtype)
    thresholds[rows, slot] = d[rows, cols]
    thresholds = thresholds.sort(dim=1).values  # (R, m_max) match distances, ascending
    # bucket[r, x] = number of match distances <= d[r, x]
    bucket = torch.searchsorted(thresholds, d, right=True)  # (R, G)
    hist = torch.zeros((num, m_max + 1), dtype=torch.int64)
    hist.scatter_add_(1, bucket, torch.ones((), dtype=torch.int64).expand_as(bucket))
    positions = torch.cumsum(hist, 1)[:, :m_max]  # (R, m_max): items before the k-th match
    # Ties: an item (other than the match itself) at exactly a match distance, or two matches
    # at the same distance; those rows are ranked by a stable sort instead.
    at_threshold = (bucket > 0) & (thresholds.gather(1, (bucket - 1).clamp(min=0)) == d)
    at_threshold &= ~junk
    k = torch.arange(m_max)
    dup = (thresholds[:, 1:] == thresholds[:, :-1]) & (k[None, 1:] < n_match[:, None])
    tied = (at_threshold.sum(1) != n_match) | dup.any(1)
    tied &= n_match > 0
    if tied.any():
        idx = tied.nonzero(as_tuple=True)[0]
        positions[idx] = _match_positions_by_sort(d[idx], match[idx], n_match[idx], m_max)
    return _summarise_positions(positions, n_match)


def _summarise_positions(positions: torch.Tensor, n_match: torch.Tensor) -> QueryScores:
    """Per-query AP, INP and first hit from (R, m_max) match positions."""
    pos = positions.double().numpy()
    n = n_match.numpy()
    k = np.arange(1, pos.shape[1] + 1, dtype=np.float64)
    real = k[None, :] <= n[:, None]  # (R, m_max) slots that hold a match
    valid = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(real, k[None, :] / (pos + 1.0), 0.0).sum(1) / n
        last = pos[np.arange(len(n)), np.maximum(n - 1, 0)]
        inp = n / (last + 1.0)
    ap[~valid] = np.nan
    inp[~valid] = np.nan
    first = np.where(valid, pos[:, 0], -1).astype(np.int64)
    return QueryScores(valid, ap, inp, first)


def score_block(dist, q_pids, q_camids, g_pids, g_camids) -> QueryScores:
    """Per-query AP, INP and first-hit position for a block of query rows.

    Args:
        dist: (R, G) distances (numpy or torch), smaller is closer.
        q_pids: (R,) query person ids.
        q_camids: (R,) query camera ids.
        g_pids: (G,) gallery person ids.
        g_camids: (G,) gallery camera ids.

    Returns:
        The `QueryScores` of these R queries.
    """
    d = torch.as_tensor(dist)
    qp, qc = torch.as_tensor(q_pids), torch.as_tensor(q_camids)
    gp, gc = torch.as_tensor(g_pids), torch.as_tensor(g_camids)
    rows = max(1, WORK_ELEMENTS // max(1, d.shape[1]))
    parts = [
        _score_rows(d[s : s + rows], qp[s : s + rows], qc[s : s + rows], gp, gc)
        for s in range(0, d.shape[0], rows)
    ]
    return QueryScores.concat(parts)


def cmc_curve(scores: QueryScores, num_gallery: int, max_rank: int = MAX_RANK) -> np.ndarray:
    """CMC[k-1] = share of kept queries with a true match in the top k, k = 1..max_rank."""
    length = min(max_rank, num_gallery)
    first = scores.first_hit[scores.valid]
    if first.size == 0:
        return np.zeros(length)
    hits = np.bincount(np.minimum(first, length), minlength=length + 1)[:length]
    return np.cumsum(hits) / first.size


def summarize(
    scores: QueryScores,
    num_gallery: int,
    ranks: Iterable[int] = (1, 5, 10, 20),
    q_camids: np.ndarray | None = None,
) -> dict:
    """Aggregate per-query scores into the reported metrics.

    Args:
        scores: Per-query scores of the whole query set.
        num_gallery: Gallery size (bounds the CMC curve).
        ranks: CMC ranks reported as `rank{k}`.
        q_camids: (Q,) query cameras; when given, a `per_camera` breakdown is added.

    Returns:
        `rank{k}` for each k, `mAP`, `mINP`, `num_query`, `num_skipped`, `cmc` (list, to rank
        50), and `per_camera` when asked.
    """
    cmc = cmc_curve(scores, num_gallery)
    kept = scores.valid
    out: dict = {}
    for k in ranks:
        out[f"rank{k}"] = float(cmc[min(k, len(cmc)) - 1]) if kept.any() else 0.0
    out["mAP"] = float(scores.ap[kept].mean()) if kept.any() else 0.0
    out["mINP"] = float(scores.inp[kept].mean()) if kept.any() else 0.0
    out["num_query"] = int(kept.sum())
    out["num_skipped"] = int((~kept).sum())
    out["cmc"] = [float(v) for v in cmc]
    if q_camids is not None:
        out["per_camera"] = per_camera(scores, np.asarray(q_camids))
    return out


def per_camera(scores: QueryScores, q_camids: np.ndarray) -> dict[str, dict]:
    """Rank-1, mAP, mINP and query counts per query camera."""
    out = {}
    for cam in np.unique(q_camids):
        sel = q_camids == cam
        kept = sel & scores.valid
        n = int(kept.sum())
        out[str(int(cam))] = {
            "num_query": n,
            "num_skipped": int((sel & ~scores.valid).sum()),
            "rank1": float((scores.first_hit[kept] == 0).mean()) if n else 0.0,
            "mAP": float(scores.ap[kept].mean()) if n else 0.0,
            "mINP": float(scores.inp[kept].mean()) if n else 0.0,
        }
    return out


def evaluate_rank(
    distmat, q_pids, g_pids, q_camids, g_camids, ranks: Iterable[int] = (1, 5, 10, 20)
) -> dict:
    """Market-1501 metrics of a full (Q, G) distance matrix; see `summarize` for the keys."""
    scores = score_block(distmat, q_pids, q_camids, g_pids, g_camids)
    return summarize(scores, np.shape(distmat)[1], ranks, q_camids=np.asarray(q_camids))
