"""CMC, mAP and mINP under the Market-1501 protocol (SPEC §2), in numpy, over query chunks.

Instead of sorting every gallery row, only the items no farther than a query's last true match
are sorted (usually a small share of the gallery). When that share is large (a weak model),
every row is sorted instead. Both sort packed uint64 keys: the query row in the high bits, then
a float32 distance's bits made order-preserving, then the gallery index in the low bits. Keys
are unique, their order within a row is exactly that of a stable sort by distance (ties by
gallery index, -0.0 equal to +0.0), and sorted rows laid end to end are one sorted array, so a
single `searchsorted` finds every true match's position. Same-identity items are found sparsely
through the gallery grouped by identity, never with (Q, G) comparisons.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from reidcli.metrics.features import Labels

MAX_RANK = 50
# About 64 MiB of uint64 keys per (rows, G) working block.
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


class GalleryIndex:
    """Gallery labels with the items of each identity grouped, for sparse same-pid lookups."""

    def __init__(self, gallery: Labels) -> None:
        self.size = len(gallery)
        self.camids = gallery.camids
        self.by_pid = np.argsort(gallery.pids, kind="stable")  # (G,) items grouped by pid
        self.pids, self.starts, self.counts = np.unique(
            gallery.pids[self.by_pid], return_index=True, return_counts=True
        )
        # bits of a gallery index in the packed keys
        self.index_bits = max(1, (self.size - 1).bit_length())

    def same_pid(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) pairs of query rows and gallery items of the same identity, row-major,
        items ascending within a row."""
        group = np.minimum(np.searchsorted(self.pids, q_pids), len(self.pids) - 1)
        counts = np.where(self.pids[group] == q_pids, self.counts[group], 0)  # (R,)
        rows = np.repeat(np.arange(len(q_pids)), counts)
        offset = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.by_pid[np.repeat(self.starts[group], counts) + offset]

    def max_rows(self) -> int:
        """Rows per block: WORK_ELEMENTS, and few enough that a row index fits in the keys."""
        return max(1, min(WORK_ELEMENTS // max(1, self.size), 1 << (32 - self.index_bits)))


def order_bits(values: np.ndarray) -> np.ndarray:
    """uint32 whose unsigned order is the order of float32 `values` (-0.0 equal to +0.0).

    Non-negative floats get the sign bit set (above every negative one); negative floats have
    every bit flipped (a larger magnitude orders lower).
    """
    bits = (values + np.float32(0.0)).view(np.uint32)  # -0.0 + 0.0 is +0.0
    sign = (bits.view(np.int32) >> 31).view(np.uint32)  # all ones for negative values
    return bits ^ (sign | np.uint32(0x80000000))


def value_keys(values: np.ndarray, cols: np.ndarray, index_bits: int) -> np.ndarray:
    """uint64 keys (order bits of the float32 value, then the column index), high to low."""
    keys = order_bits(values).astype(np.uint64)
    keys <<= np.uint64(index_bits)
    keys |= cols.astype(np.uint64)
    return keys


def pack_keys(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, index_bits: int):
    """uint64 keys (row, order bits of the float32 value, gallery index), high to low."""
    keys = value_keys(values, cols, index_bits)
    keys |= rows.astype(np.uint64) << np.uint64(32 + index_bits)
    return keys


def _slots(rows: np.ndarray, n_match: np.ndarray) -> np.ndarray:
    """Index of each row-major (row, ...) entry within its row."""
    return np.arange(rows.size) - (np.cumsum(n_match) - n_match)[rows]


def _positions_by_candidates(d, m_rows, m_cols, j_rows, j_cols, n_match, bits) -> np.ndarray | None:
    """(M,) positions of the true matches from the few items no farther than each row's last.

    Returns None when those items exceed CANDIDATE_SHARE of the block (a weak model), where
    sorting every row is cheaper than gathering the candidates.
    """
    m_dist = d[m_rows, m_cols]
    last = np.full(d.shape[0], -np.inf, dtype=d.dtype)
    has = n_match > 0
    last[has] = np.maximum.reduceat(m_dist, (np.cumsum(n_match) - n_match)[has])
    candidate = d <= last[:, None]  # (R, G): the only items that can precede a match
    candidate[j_rows, j_cols] = False  # same identity, same camera: removed
    if np.count_nonzero(candidate) > CANDIDATE_SHARE * d.size:
        return None
    flat = np.flatnonzero(candidate)  # row * G + col, ascending (one index array: cheaper)
    rows, cols = np.divmod(flat, d.shape[1])
    keys = pack_keys(np.take(d, flat), rows, cols, bits)
    keys.sort()  # unique keys: row-major, then the stable distance order
    row_start = np.searchsorted(keys, m_rows.astype(np.uint64) << np.uint64(32 + bits))
    return np.searchsorted(keys, pack_keys(m_dist, m_rows, m_cols, bits)) - row_start


def _positions_by_keys(d, m_rows, m_cols, j_rows, j_cols, n_match, bits) -> np.ndarray:
    """(M,) positions of the true matches, every row sorted as packed keys."""
    num, num_g = d.shape
    rows = np.arange(num)[:, None]
    keys = pack_keys(d, rows, np.arange(num_g), bits)  # (R, G)
    # removed items: the largest key of their row, behind every true match
    keys[j_rows, j_cols] = (j_rows.astype(np.uint64) << np.uint64(32 + bits)) | np.uint64(
        (1 << (32 + bits)) - 1
    )
    keys.sort(axis=1)  # rows laid end to end are one sorted array
    found = np.searchsorted(keys.ravel(), pack_keys(d[m_rows, m_cols], m_rows, m_cols, bits))
    return found - m_rows * num_g


def _positions_by_sort(d, m_rows, m_cols, j_rows, j_cols) -> np.ndarray:
    """(M,) positions of the true matches from a stable argsort of each row (any dtype)."""
    num, num_g = d.shape
    d = np.array(d, dtype=np.result_type(d.dtype, np.float32))  # a copy we may change
    d[j_rows, j_cols] = np.inf  # removed items behind every finite match
    order = np.argsort(d, axis=1, kind="stable")
    position = np.empty_like(order)
    position[np.arange(num)[:, None], order] = np.arange(num_g)  # inverse permutation per row
    return position[m_rows, m_cols]


def _score_rows(d: np.ndarray, query: Labels, gallery: GalleryIndex) -> QueryScores:
    """Score one (R, G) block; see `score_block`."""
    num = d.shape[0]
    rows, cols = gallery.same_pid(query.pids)
    junk = gallery.camids[cols] == query.camids[rows]  # same identity, same camera: removed
    m_rows, m_cols, j_rows, j_cols = rows[~junk], cols[~junk], rows[junk], cols[junk]
    n_match = np.bincount(m_rows, minlength=num)  # (R,)
    m_max = int(n_match.max()) if num else 0
    if m_max == 0:
        nan = np.full(num, np.nan)
        return QueryScores(np.zeros(num, bool), nan, nan.copy(), np.full(num, -1, np.int64))
    if d.dtype == np.float16:
        d = d.astype(np.float32)  # exact, same order and ties
    if d.dtype == np.float32:
        args = (d, m_rows, m_cols, j_rows, j_cols, n_match, gallery.index_bits)
        found = _positions_by_candidates(*args)
        found = _positions_by_keys(*args) if found is None else found
    else:
        found = _positions_by_sort(d, m_rows, m_cols, j_rows, j_cols)
    # (R, m_max) positions, ascending within each row (matches were in gallery order)
    found = np.sort(found + m_rows * d.shape[1]) - m_rows * d.shape[1]
    positions = np.zeros((num, m_max), dtype=np.int64)
    positions[m_rows, _slots(m_rows, n_match)] = found
    return summarise_positions(positions, n_match)


def summarise_positions(positions: np.ndarray, n_match: np.ndarray) -> QueryScores:
    """Per-query AP, INP and first hit from (R, m_max) match positions."""
    pos = positions.astype(np.float64)
    n = n_match
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


def score_block(dist, query: Labels, gallery: Labels | GalleryIndex) -> QueryScores:
    """Per-query AP, INP and first-hit position for a block of query rows.

    Args:
        dist: (R, G) distances (numpy array or tensor), smaller is closer.
        query: The R queries' person ids and cameras.
        gallery: The G gallery items' labels (or their `GalleryIndex`).

    Returns:
        The `QueryScores` of these R queries.
    """
    d = _as_matrix(dist)
    index = gallery if isinstance(gallery, GalleryIndex) else GalleryIndex(gallery)
    rows = index.max_rows()
    parts = [
        _score_rows(d[s : s + rows], query[s : s + rows], index) for s in range(0, d.shape[0], rows)
    ]
    return QueryScores.concat(parts)


def top_k(dist, query: Labels, gallery: Labels, k: int) -> np.ndarray:
    """(R, min(k, G)) gallery indices of each query's first k items in the stable ranking,
    same-identity same-camera items removed (placed last, in their stable order)."""
    d = _as_matrix(dist)
    num_g = d.shape[1]
    k = min(k, num_g)
    index = GalleryIndex(gallery)
    rows, cols = index.same_pid(query.pids)
    junk = gallery.camids[cols] == query.camids[rows]
    rows, cols = rows[junk], cols[junk]
    if d.dtype not in (np.float32, np.float16):  # no packed keys: a stable sort, removed last
        d = np.array(d, dtype=np.result_type(d.dtype, np.float32))
        removed = np.zeros(d.shape, dtype=bool)
        removed[rows, cols] = True
        return np.lexsort((d, removed), axis=1)[:, :k]
    bits = index.index_bits
    keys = value_keys(d.astype(np.float32), np.arange(num_g), bits)  # (R, G)
    keys[rows, cols] |= np.uint64(1 << (32 + bits))  # a flag above the value: behind the rest
    if k < num_g:
        keys = np.partition(keys, k - 1, axis=1)[:, :k]
    keys.sort(axis=1)
    return (keys & np.uint64((1 << bits) - 1)).astype(np.int64)


def _as_matrix(dist) -> np.ndarray:
    """A distance matrix as a numpy array (tensors duck-typed, never imported)."""
    if hasattr(dist, "detach"):
        dist = dist.detach().cpu().numpy()
    return np.asarray(dist)


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
    for cam in sorted(set(q_camids.tolist())):  # (np.unique would import numpy.ma: 10+ ms)
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
    dist, query: Labels, gallery: Labels, ranks: Iterable[int] = (1, 5, 10, 20)
) -> dict:
    """Market-1501 metrics of a full (Q, G) distance matrix; see `summarize` for the keys."""
    scores = score_block(dist, query, gallery)
    return summarize(scores, np.shape(dist)[1], ranks, q_camids=query.camids)
