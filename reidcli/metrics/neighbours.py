"""Every item's k nearest items (stable order: ties by index) and its farthest distance.

Keys pack a float32 distance's order-preserving bits above the item index (`value_keys`), so
an item's k smallest keys are exactly the first k of a stable sort by distance. Per block of
distances, a float32 partial sort finds each row's k-th value and the items within it are
packed (more than k only with ties at the k-th value: those rows take an exact partial sort of
all their keys). Each row keeps its k best keys; once it has k, a later block only contributes
its items no farther than the row's k-th best so far (usually few), sorted with them as keys.

With symmetric distances, the row block [s, e) is computed against the columns from s on only
(half the products): rows s..e take their candidates from it, and the rows after e take the
candidates among s..e from its transpose.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from reidcli.metrics.parallel import THREADS
from reidcli.metrics.rank import value_keys

# (rows, N) float32 distance blocks of about 8 MiB (with the transposed copy and the partial
# sorts' copies, a few such blocks are alive at once).
BLOCK_ELEMENTS = 1 << 21
# At least this many rows per block, so that the products stay efficient for large N (fewer
# rows would read the whole (N, D) matrix once per handful of rows).
MIN_BLOCK_ROWS = 64
NO_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)  # above every real key (finite distances)


def _block_keys(block: np.ndarray, k: int, col_offset: int, bits: int) -> np.ndarray:
    """(r, min(k, m)) keys of each row's smallest values in an (r, m) block, unordered."""
    num, m = block.shape
    cols = np.arange(col_offset, col_offset + m)
    if k >= m:
        return value_keys(block, cols, bits)
    kth = np.partition(block, k - 1, axis=1)[:, k - 1]  # (r,) each row's k-th smallest value
    within = block <= kth[:, None]  # (r, m): k items per row, more with ties at the k-th value
    ties = np.count_nonzero(within, axis=1) > k
    if ties.any():
        out = np.empty((num, k), dtype=np.uint64)
        out[~ties] = _block_keys(block[~ties], k, col_offset, bits)
        keys = value_keys(block[ties], cols, bits)  # exact among equal values
        out[ties] = np.partition(keys, k - 1, axis=1)[:, :k]
        return out
    flat = np.flatnonzero(within)  # exactly k per row, row-major
    return value_keys(np.take(block, flat).reshape(num, k), cols[flat.reshape(num, k) % m], bits)


def _key_values(keys: np.ndarray, bits: int) -> np.ndarray:
    """The float32 values of packed keys (the inverse of `order_bits`)."""
    ordered = (keys >> np.uint64(bits)).astype(np.uint32)
    negative = ordered < np.uint32(0x80000000)
    return np.where(negative, ~ordered, ordered ^ np.uint32(0x80000000)).view(np.float32)


def _update(best, row_max, start, block, col_offset, bits) -> None:
    """Merge an (r, m) block of distances of rows start.. into their best keys and maxima."""
    rows = slice(start, start + len(block))
    num, k = len(block), best.shape[1]
    np.maximum(row_max[rows], block.max(1), out=row_max[rows])
    worst = best[rows].max(1)  # (r,) each row's k-th best key so far
    if (worst == NO_KEY).any():  # a row without k candidates yet: partial sort of the block
        merged = np.concatenate([best[rows], _block_keys(block, k, col_offset, bits)], axis=1)
        best[rows] = np.partition(merged, k - 1, axis=1)[:, :k]
        return
    # only items no farther than a row's k-th best so far can enter it (ties: by key below)
    flat = np.flatnonzero(block <= _key_values(worst, bits)[:, None])
    if flat.size == 0:
        return
    owner, cols = np.divmod(flat, block.shape[1])
    fresh = value_keys(np.take(block, flat), cols + col_offset, bits)
    keys = np.concatenate([best[rows].ravel(), fresh])
    owner = np.concatenate([np.repeat(np.arange(num), k), owner])
    keys |= owner.astype(np.uint64) << np.uint64(32 + bits)  # row in the high bits
    keys.sort()
    counts = k + np.bincount(owner[num * k :], minlength=num)
    first = np.cumsum(counts) - counts
    best[rows] = keys[first[:, None] + np.arange(k)] & np.uint64((1 << (32 + bits)) - 1)


def nearest(source, k: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) nearest items of every item, nearest first, and (N,) float32 row maxima.

    Args:
        source: Distances by blocks: `n` and `block(start, stop, col_start)`.
        k: Neighbours per item (at most N).
        symmetric: Whether d(i, j) = d(j, i), so that half the blocks suffice.
    """
    n = source.n
    bits = max(1, (n - 1).bit_length())
    best = np.full((n, k), NO_KEY)
    row_max = np.full(n, -np.inf, dtype=np.float32)
    rows = max(MIN_BLOCK_ROWS, BLOCK_ELEMENTS // n)

    def update(pool, start, block, col_offset):
        # the sorts are single-threaded: split the block's rows between threads, in parts
        # whose row index fits in the keys beside the value and the column
        size = min(-(-len(block) // THREADS), 1 << (32 - bits))
        parts = [(start + i, block[i : i + size]) for i in range(0, len(block), size)]
        list(pool.map(lambda p: _update(best, row_max, p[0], p[1], col_offset, bits), parts))

    with ThreadPoolExecutor(THREADS) as pool:
        for s in range(0, n, rows):
            e = min(s + rows, n)
            col_start = s if symmetric else 0
            block = source.block(s, e, col_start)  # (r, N - col_start)
            update(pool, s, block, col_start)
            if symmetric and e < n:  # rows e.. against columns s..e
                update(pool, e, np.ascontiguousarray(block[:, e - s :].T), s)
    best.sort(axis=1)
    return (best & np.uint64((1 << bits) - 1)).astype(np.int64), row_max
