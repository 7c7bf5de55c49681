"""k-reciprocal re-ranking (Zhong et al., CVPR 2017; SPEC §3) in sparse form, in numpy.

The reference holds five dense (N, N) arrays. Only each item's top neighbours matter, so this
version keeps the (N, k1 + 1) neighbour table, the sparse encoding V (about k1 expanded
neighbours per row, then k2-averaged), and computes the Jaccard min-sums over V's sparse supports
with an inverted (column) index, query chunk by query chunk. Memory grows with N·k plus bounded
chunk temporaries; the final (Q, G) matrix can be streamed with `iter_rerank`.

The original distance is the squared euclidean distance between embeddings (for "cosine" the
embeddings are L2-normalised first), each row divided by its maximum over all N items. The
neighbour table comes from `neighbours.nearest` (stable order, half the distance products);
the sparse encodings are plain numpy (`sparse_rows`), so scipy is not imported.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from reidcli.metrics.distance import Metric, as_array, check_metric, normalize, squared_norms
from reidcli.metrics.neighbours import nearest
from reidcli.metrics.parallel import parallel_map
from reidcli.metrics.sparse_rows import SparseRows, min_sums

# (rows, G) blocks of the final matrix: about 8 MiB of float64 Jaccard sums.
FINAL_ELEMENTS = 1 << 20
# Gathered (query nonzero, gallery nonzero) pairs per Jaccard chunk (about 4 MiB per array).
PAIR_BUDGET = 1 << 19
# Feature pairs gathered at once when computing distances of arbitrary pairs.
PAIR_ROWS = 1 << 10
# Query-to-gallery distances kept from the neighbour pass for the final matrix when there are at
# most this many (64 MiB of float32); larger problems compute them again, block by block.
KEEP_ELEMENTS = 1 << 24
# Gathered (item, candidate, candidate's neighbour) triples per chunk when expanding the sets
# (a few int64 arrays of this size, 256 KiB each, are alive at once in each of `parallel.THREADS`
# threads; small chunks stay in the caches).
EXPAND_ELEMENTS = 1 << 15


class FeatureSource:
    """Squared euclidean distances between the rows of an (N, D) feature matrix, on demand."""

    symmetric = True

    def __init__(self, features: np.ndarray) -> None:
        self.x = features  # (N, D) float32
        self.sq = squared_norms(features)  # (N,)
        self.n = features.shape[0]
        self._kept: np.ndarray | None = None  # (Q, N - Q) distances copied out of blocks
        self._kept_rows = np.zeros(0, dtype=bool)  # which of its rows are filled

    def keep(self, num_rows: int) -> None:
        """From now on, copy the distances of rows :num_rows to columns num_rows: out of every
        block that holds them in full; `block(start, stop, num_rows)` then hands those rows out
        (once each: the caller owns and may modify the returned block)."""
        self._kept = np.empty((num_rows, self.n - num_rows), dtype=self.x.dtype)
        self._kept_rows = np.zeros(num_rows, dtype=bool)

    def block(self, start: int, stop: int, col_start: int = 0) -> np.ndarray:
        """(stop - start, N - col_start) distances of rows start:stop to columns col_start:."""
        kept = self._kept
        if kept is not None and col_start == len(kept) and self._kept_rows[start:stop].all():
            self._kept_rows[start:stop] = False
            return kept[start:stop]
        dist = self.x[start:stop] @ self.x[col_start:].T  # BLAS, multi-threaded
        dist *= -2.0
        dist += self.sq[start:stop, None]
        dist += self.sq[None, col_start:]
        np.maximum(dist, 0.0, out=dist)
        # an item is at distance 0 from itself, whatever the rounding of the expansion above
        rows = np.arange(max(start, col_start), max(stop, col_start))
        dist[rows - start, rows - col_start] = 0.0
        if kept is not None and start < len(kept) and col_start <= len(kept):
            stop_q = min(stop, len(kept))
            kept[start:stop_q] = dist[: stop_q - start, len(kept) - col_start :]
            self._kept_rows[start:stop_q] = True
        return dist

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """(M,) distances of the item pairs (i[m], j[m])."""
        out = np.empty(i.size, dtype=self.x.dtype)

        def chunk(s: int) -> None:
            a, b = i[s : s + PAIR_ROWS], j[s : s + PAIR_ROWS]
            dot = np.einsum("ij,ij->i", self.x[a], self.x[b])
            out[s : s + PAIR_ROWS] = np.maximum(self.sq[a] + self.sq[b] - 2 * dot, 0.0)

        parallel_map(chunk, range(0, i.size, PAIR_ROWS))
        out[i == j] = 0.0
        return out


class MatrixSource:
    """The same interface over a precomputed (N, N) squared-distance matrix (used as given,
    every row read in full: it may not be exactly symmetric)."""

    symmetric = False

    def __init__(self, dist: np.ndarray) -> None:
        self.d = dist
        self.n = dist.shape[0]

    def block(self, start: int, stop: int, col_start: int = 0) -> np.ndarray:
        return self.d[start:stop, col_start:].copy()  # callers may modify the block in place

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return self.d[i, j]


def _row_keys(table: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Sorted int64 keys i·N + j of the entries j of each row i (those in `mask`, if given)."""
    n = len(table)
    keys = np.arange(n)[:, None] * n + table
    return np.sort(keys[mask] if mask is not None else keys.ravel())


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Whether each of `keys` is among `sorted_keys`."""
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def _reciprocal_mask(table: np.ndarray) -> np.ndarray:
    """(N, k) bool: whether table[i, m] also has i among its own first k neighbours."""
    n = len(table)
    return _contains(_row_keys(table), table * n + np.arange(n)[:, None])


def _expanded_sets(knn: np.ndarray, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, indices) of every item's expanded k-reciprocal set (SPEC §3 steps 1–2)."""
    n = knn.shape[0]
    half = int(np.around(k1 / 2.0))
    table, table_h = knn[:, : k1 + 1], knn[:, : half + 1]
    mask, mask_h = parallel_map(_reciprocal_mask, (table, table_h))
    in_r = _row_keys(table, mask)  # R(p, k1) of every p, as keys p·N + member
    rows = max(1, EXPAND_ELEMENTS // ((k1 + 1) * (half + 1)))

    def chunk(s: int) -> tuple[np.ndarray, np.ndarray]:
        """The members of the sets of items s:s+rows, and how many each set has."""
        cand, cmask = table[s : s + rows], mask[s : s + rows]  # (r, k1+1)
        sub, sub_mask = table_h[cand], mask_h[cand]  # (r, k1+1, half+1): R(c, k1/2)
        p = np.arange(s, s + len(cand))[:, None, None]
        common = (_contains(in_r, p * n + sub) & sub_mask).sum(-1)  # |R(c, k1/2) ∩ R(p, k1)|
        size = sub_mask.sum(-1)
        accept = cmask & (common > (2.0 / 3.0) * size)  # (r, k1+1)
        members = np.concatenate(
            [
                np.where(cmask, cand, n),
                np.where(sub_mask & accept[..., None], sub, n).reshape(len(cand), -1),
            ],
            axis=1,
        )
        members.sort(axis=1)  # sentinel n sorts last
        keep = members < n
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]  # unique per row
        return members[keep], keep.sum(1)

    members, counts = zip(*parallel_map(chunk, range(0, n, rows)), strict=True)
    indptr = np.concatenate([np.zeros(1, np.int64), np.cumsum(np.concatenate(counts))])
    return indptr, np.concatenate(members)


def _encode(source, knn: np.ndarray, row_max: np.ndarray, k1: int, k2: int) -> SparseRows:
    """Sparse V: exp(−d) over each expanded set, normalised, then averaged over k2 neighbours."""
    n = source.n
    indptr, indices = _expanded_sets(knn, k1)
    row = np.repeat(np.arange(n), np.diff(indptr))  # (nnz,)
    weight = np.exp(-(source.pairs(row, indices) / row_max[row]))  # (nnz,) float32
    # every row holds at least the item itself (its own nearest neighbour), so no empty sums
    total = np.add.reduceat(weight, indptr[:-1])  # (N,) float32
    v = SparseRows(indptr, indices, weight / total[row], n)
    if k2 != 1:
        v = v.mean_of_rows(knn[:, :k2])  # local query expansion over the k2 nearest items
    return v


def _query_chunks(vq: SparseRows, col_nnz: np.ndarray, max_rows: int) -> Iterator[slice]:
    """Query slices whose gathered pair count stays near PAIR_BUDGET."""
    per_nnz = col_nnz[vq.indices]
    cum = np.concatenate([[0], np.cumsum(per_nnz)])[vq.indptr]  # (Q+1,) pairs before row q
    start, q = 0, vq.num_rows
    while start < q:
        stop = int(np.searchsorted(cum, cum[start] + PAIR_BUDGET, side="right")) - 1
        stop = min(max(stop, start + 1), start + max_rows, q)
        yield slice(start, stop)
        start = stop


def _iter_final(
    source, num_query: int, k1: int, k2: int, lambda_: float
) -> Iterator[tuple[int, np.ndarray]]:
    n = source.n
    if isinstance(source, FeatureSource) and num_query * (n - num_query) <= KEEP_ELEMENTS:
        source.keep(num_query)  # the final blocks reuse the neighbour pass's products
    knn, row_max = nearest(source, max(k1 + 1, k2), symmetric=source.symmetric)
    v = _encode(source, knn, row_max, k1, k2)
    del knn
    vq = v.rows(0, num_query)
    vg_by_col = v.rows(num_query, n).transpose()  # (N, G): gallery entries of each column
    col_nnz = np.diff(vg_by_col.indptr)
    max_rows = max(1, FINAL_ELEMENTS // max(1, n - num_query))
    for rows in _query_chunks(vq, col_nnz, max_rows):
        tmin = min_sums(vq.rows(rows.start, rows.stop), vg_by_col)  # (r, G) float64
        # jaccard = 1 − tmin / (2 − tmin), weighted by (1 − λ); in place to bound memory
        np.divide(tmin, 2.0 - tmin, out=tmin)
        np.subtract(1.0, tmin, out=tmin)
        tmin *= 1.0 - lambda_
        final = source.block(rows.start, rows.stop, col_start=num_query)  # (r, G) float32
        final /= row_max[rows, None]
        final *= np.float32(lambda_)
        final += tmin
        yield rows.start, final


def _check_params(k1: int, k2: int, lambda_: float, n: int) -> None:
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda must be within [0, 1], got {lambda_}")
    if max(k1 + 1, k2) > n:
        raise ValueError(f"k1 + 1 and k2 must not exceed the {n} query and gallery items")


def iter_rerank(
    query_features, gallery_features, *, k1: int, k2: int, lambda_: float, metric: Metric
) -> Iterator[tuple[int, np.ndarray]]:
    """Re-rank from features, yielding (first query index, (rows, G) float32 block) in order.

    Args:
        query_features: (Q, D) array or tensor.
        gallery_features: (G, D) array or tensor.
        k1: k-reciprocal neighbourhood size.
        k2: local query expansion size.
        lambda_: weight of the original distance in the final one.
        metric: "euclidean", or "cosine" to L2-normalise the embeddings first.
    """
    check_metric(metric)
    x = np.concatenate([as_array(query_features), as_array(gallery_features)])  # (N, D)
    if metric == "cosine":
        x = normalize(x)
    _check_params(k1, k2, lambda_, x.shape[0])
    yield from _iter_final(FeatureSource(x), len(query_features), k1, k2, lambda_)


def iter_jaccard(features, *, k1: int, k2: int, metric: Metric) -> Iterator[tuple[int, np.ndarray]]:
    """The k-reciprocal Jaccard distances among all items of one set (the λ = 0 re-ranked
    distance with every item as both query and gallery), by blocks of rows.

    Pairs whose encodings share no item are at distance exactly 1; an item is at 0 from itself.

    Args:
        features: (N, D) array or tensor.
        k1: k-reciprocal neighbourhood size.
        k2: local query expansion size.
        metric: "euclidean", or "cosine" to L2-normalise the embeddings first.

    Yields:
        (first row, (rows, N) float64 block of Jaccard distances), in order.
    """
    check_metric(metric)
    x = as_array(features)
    if metric == "cosine":
        x = normalize(x)
    n = x.shape[0]
    _check_params(k1, k2, 0.0, n)
    source = FeatureSource(x)
    knn, row_max = nearest(source, max(k1 + 1, k2), symmetric=True)
    v = _encode(source, knn, row_max, k1, k2)
    del knn
    v_by_col = v.transpose()  # (N, N) by columns
    max_rows = max(1, FINAL_ELEMENTS // n)
    for rows in _query_chunks(v, np.diff(v_by_col.indptr), max_rows):
        tmin = min_sums(v.rows(rows.start, rows.stop), v_by_col)  # (r, N) float64
        np.divide(tmin, 2.0 - tmin, out=tmin)
        np.subtract(1.0, tmin, out=tmin)
        yield rows.start, tmin


def _collect(blocks: Iterator[tuple[int, np.ndarray]], num_query: int, num_gallery: int):
    """Fill one preallocated (Q, G) float32 matrix from the row blocks (no second copy)."""
    out = np.empty((num_query, num_gallery), dtype=np.float32)
    for start, block in blocks:
        out[start : start + len(block)] = block
    return out


def rerank(
    query_features, gallery_features, *, k1: int, k2: int, lambda_: float, metric: Metric
) -> np.ndarray:
    """The full (Q, G) re-ranked distance matrix; arguments as `iter_rerank`."""
    blocks = iter_rerank(
        query_features, gallery_features, k1=k1, k2=k2, lambda_=lambda_, metric=metric
    )
    return _collect(blocks, len(query_features), len(gallery_features))


def rerank_distances(
    q_g_dist, q_q_dist, g_g_dist, *, k1: int, k2: int, lambda_: float
) -> np.ndarray:
    """Re-rank precomputed plain euclidean distances (the reference function's inputs).

    Args:
        q_g_dist: (Q, G) distances.
        q_q_dist: (Q, Q) distances.
        g_g_dist: (G, G) distances.
        k1: k-reciprocal neighbourhood size.
        k2: local query expansion size.
        lambda_: weight of the original distance.

    Returns:
        (Q, G) float32 re-ranked distances.
    """
    q_g, q_q, g_g = (np.asarray(a, dtype=np.float32) for a in (q_g_dist, q_q_dist, g_g_dist))
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    full = np.square(full)  # (N, N) squared, float32
    _check_params(k1, k2, lambda_, full.shape[0])
    blocks = _iter_final(MatrixSource(full), q_g.shape[0], k1, k2, lambda_)
    return _collect(blocks, *q_g.shape)
