"""CMC, mAP and mINP under the Market-1501 protocol (SPEC §2), vectorised over query chunks.

Instead of sorting every gallery row, only the items no farther than a query's last true match
are sorted (usually a small share of the gallery). When that share is large (a weak model), the
match keys are sorted instead, every gallery item is bucketed against them with one
`searchsorted`, and a cumulative histogram gives each match's position. Keys pack a float32
distance's bits with the gallery index, so ties are ordered by gallery index exactly as a stable
sort does. Same-identity items are found sparsely through the gallery grouped by identity,
never with (Q, G) comparisons.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

MAX_RANK = 50
# About 64 MiB of int64 per (rows, G) working block.
WORK_ELEMENTS = 1 << 23
# Above this share of items no farther than the last true match, every item is keyed instead.
CANDIDATE_SHARE = 0.25


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


class _Gallery:
    """Gallery labels with the items of each identity grouped, for sparse same-pid lookups."""

    def __init__(self, g_pids: torch.Tensor, g_camids: torch.Tensor) -> None:
        self.camids = g_camids
        self.by_pid = torch.sort(g_pids, stable=True).indices  # (G,) item order, grouped by pid
        self.pids, self.counts = torch.unique_consecutive(g_pids[self.by_pid], return_counts=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def same_pid(self, q_pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, item) pairs of query rows and gallery items of the same identity, row-major,
        items ascending within a row."""
        group = torch.searchsorted(self.pids, q_pids).clamp(max=max(len(self.pids) - 1, 0))
        found = self.pids[group] == q_pids
        counts = torch.where(found, self.counts[group], 0)  # (R,)
        rows = torch.repeat_interleave(torch.arange(len(q_pids)), counts)
        offset = torch.arange(rows.numel()) - (torch.cumsum(counts, 0) - counts)[rows]
        return rows, self.by_pid[self.starts[group][rows] + offset]


def _order_keys(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """int64 keys whose order is the stable order of float32 `values` (value, then index).

    A float32's bit pattern, with the magnitude bits of negative values flipped, orders like the
    float; the gallery index fills the low 32 bits, so keys are unique and need no tie rules.
    """
    bits = values.view(torch.int32)
    if bool((bits < 0).any()):  # negative values, or -0.0 (equal to +0.0 for a sort)
        bits = (values + 0.0).view(torch.int32)
        bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    keys = bits.to(torch.int64)
    keys <<= 32
    keys += index
    return keys


def _positions_by_candidates(
    d: torch.Tensor, m_rows, m_cols, j_rows, j_cols, n_match: torch.Tensor, m_max: int
) -> torch.Tensor | None:
    """(R, m_max) match positions from the few items no farther than each row's last match.

    Returns None when those items exceed CANDIDATE_SHARE of the block (a weak model), where
    keying every item is cheaper than sorting the candidates.
    """
    num, num_g = d.shape
    last = torch.full((num,), float("-inf"), dtype=d.dtype)
    last.scatter_reduce_(0, m_rows, d[m_rows, m_cols], "amax")  # farthest true match per row
    rows, cols = (d <= last[:, None]).nonzero(as_tuple=True)  # the only items that can precede
    if rows.numel() > CANDIDATE_SHARE * d.numel():
        return None
    codes = rows * num_g + cols
    kept = ~torch.isin(codes, j_rows * num_g + j_cols)  # drop same-identity same-camera items
    rows, cols, codes = rows[kept], cols[kept], codes[kept]
    order = torch.sort(_order_keys(d[rows, cols], cols), stable=True).indices
    order = order[torch.sort(rows[order], stable=True).indices]  # by row, then stable order
    rows, codes = rows[order], codes[order]
    position = torch.arange(rows.numel()) - torch.searchsorted(rows, rows)  # within its row
    is_match = torch.isin(codes, m_rows * num_g + m_cols)
    r, p = rows[is_match], position[is_match]  # row-major, positions ascending
    slot = torch.arange(r.numel()) - (torch.cumsum(n_match, 0) - n_match)[r]
    out = torch.zeros((num, m_max), dtype=torch.int64)
    out[r, slot] = p
    return out


def _positions_by_keys(
    keys: torch.Tensor, m_rows, m_cols, j_rows, j_cols, n_match: torch.Tensor, m_max: int
) -> torch.Tensor:
    """(R, m_max) 0-based positions of the true matches among the kept gallery items.

    Every item is bucketed against the row's sorted match keys with one `searchsorted`; a
    cumulative histogram then counts the items ahead of each match, and the removed
    (same-identity, same-camera) items ahead of it are subtracted.
    """
    num = keys.shape[0]
    slot = torch.arange(m_rows.numel()) - (torch.cumsum(n_match, 0) - n_match)[m_rows]
    thresholds = torch.full((num, m_max), torch.iinfo(torch.int64).max, dtype=torch.int64)
    thresholds[m_rows, slot] = keys[m_rows, m_cols]
    thresholds = thresholds.sort(dim=1).values  # (R, m_max) match keys, ascending
    bucket = torch.searchsorted(thresholds, keys, right=True)  # (R, G): match keys <= item key
    hist = torch.zeros((num, m_max + 1), dtype=torch.int64)
    hist.scatter_add_(1, bucket, torch.ones((), dtype=torch.int64).expand_as(bucket))
    positions = torch.cumsum(hist, 1)[:, :m_max]  # items ahead of the k-th match
    junk_ahead = keys[j_rows, j_cols][:, None] < thresholds[j_rows]  # (J, m_max)
    positions.index_add_(0, j_rows, -junk_ahead.to(torch.int64))
    return positions


def _positions_by_sort(d, m_rows, m_cols, j_rows, j_cols, n_match, m_max) -> torch.Tensor:
    """The same positions from a stable sort of each row (any dtype; slower)."""
    num, num_g = d.shape
    d = d.clone()
    d[j_rows, j_cols] = float("inf")  # removed items behind every finite match
    match = torch.zeros((num, num_g), dtype=torch.bool)
    match[m_rows, m_cols] = True
    order = torch.sort(d, dim=1, stable=True).indices
    rows, pos = match.gather(1, order).nonzero(as_tuple=True)
    slot = torch.arange(rows.numel()) - (torch.cumsum(n_match, 0) - n_match)[rows]
    out = torch.zeros((num, m_max), dtype=torch.int64)
    out[rows, slot] = pos
    return out


def _score_rows(
    d: torch.Tensor, q_pids: torch.Tensor, q_camids: torch.Tensor, gallery: _Gallery
) -> QueryScores:
    """Score one (R, G) block; see `score_block`."""
    num = d.shape[0]
    rows, cols = gallery.same_pid(q_pids)
    junk = gallery.camids[cols] == q_camids[rows]  # same identity, same camera: removed
    m_rows, m_cols, j_rows, j_cols = rows[~junk], cols[~junk], rows[junk], cols[junk]
    n_match = torch.bincount(m_rows, minlength=num)  # (R,)
    m_max = int(n_match.max()) if num else 0
    if m_max == 0:
        nan = np.full(num, np.nan)
        return QueryScores(np.zeros(num, bool), nan, nan.copy(), np.full(num, -1, np.int64))
    args = (m_rows, m_cols, j_rows, j_cols, n_match, m_max)
    if d.dtype == torch.float32:
        positions = _positions_by_candidates(d, *args)
        if positions is None:
            keys = _order_keys(d.contiguous(), torch.arange(d.shape[1]))
            positions = _positions_by_keys(keys, *args)
    else:
        positions = _positions_by_sort(d, *args)
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
    gallery = _Gallery(torch.as_tensor(g_pids), torch.as_tensor(g_camids))
    rows = max(1, WORK_ELEMENTS // max(1, d.shape[1]))
    parts = [
        _score_rows(d[s : s + rows], qp[s : s + rows], qc[s : s + rows], gallery)
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
