"""CUHK03 classic single-gallery-shot CMC: one random gallery image per identity, repeated.

As torchreid's `eval_cuhk03`: after removing same-identity same-camera items, every identity
keeps one random gallery image, the CMC of that reduced gallery is taken, and the curve is
averaged over the repeats. The draws are seeded, query by query (each query draws its
(REPEATS, G) uniform keys in turn), so they do not depend on how the queries are chunked; they
are not the reference's random stream.
Each identity keeps its item with the largest uniform key (a uniform draw among its allowed
items); a query's rank is the number of kept items ahead of its kept true match in the stable
distance order (distance, then gallery index), so no row is ever sorted.
"""

from __future__ import annotations

import numpy as np

from reidcli.metrics.features import Labels
from reidcli.metrics.rank import GalleryIndex

REPEATS = 10
# About 32 MiB of float64 draws per (rows, REPEATS, G) working block.
WORK_ELEMENTS = 1 << 22


def single_shot_cmc(
    dist, query: Labels, gallery: Labels, rng: np.random.Generator, max_rank: int = 50
) -> np.ndarray:
    """Per-query single-gallery-shot CMC curves of a block of queries.

    Args:
        dist: (R, G) distances (numpy array or tensor).
        query: The R queries' person ids and cameras.
        gallery: The G gallery items' person ids and cameras.
        rng: Random generator, advanced query by query: (REPEATS, G) uniform draws each.
        max_rank: Length of the curve.

    Returns:
        (R, max_rank) float64 curves averaged over the repeats (zeros for skipped queries).
    """
    if hasattr(dist, "detach"):
        dist = dist.detach().cpu().numpy()
    d = np.asarray(dist)
    index = GalleryIndex(gallery)
    rows = max(1, WORK_ELEMENTS // max(1, REPEATS * d.shape[1]))
    parts = [
        _single_shot_rows(d[s : s + rows], query[s : s + rows], index, rng, max_rank)
        for s in range(0, d.shape[0], rows)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, max_rank))


def _first_per_row(rows: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """Indices of the first selected entry of each row, `rows` being sorted."""
    idx = np.flatnonzero(selected)
    keep = np.ones(idx.size, dtype=bool)
    keep[1:] = rows[idx[1:]] != rows[idx[:-1]]
    return idx[keep]


def _single_shot_rows(d, query: Labels, index: GalleryIndex, rng, max_rank) -> np.ndarray:
    num, num_g = d.shape
    rows, cols = index.same_pid(query.pids)
    junk = index.camids[cols] == query.camids[rows]  # same identity, same camera: removed
    m_rows, m_cols = rows[~junk], cols[~junk]
    n_match = np.bincount(m_rows, minlength=num)
    seg_starts = (np.cumsum(n_match) - n_match)[n_match > 0]
    d_grouped = d[:, index.by_pid]  # (R, G) columns grouped by identity
    ranks_ahead = np.arange(1, max_rank + 1)
    cmc = np.zeros((num, max_rank))
    draws = rng.random((num, REPEATS, num_g))  # query by query: the same for any chunking
    for t in range(REPEATS):
        key = draws[:, t]  # (R, G) uniform keys; removed items are never drawn
        key[rows[junk], cols[junk]] = -1.0
        m_key = key[m_rows, m_cols]
        key = key[:, index.by_pid]
        best = np.maximum.reduceat(key, index.starts, axis=1)  # (R, P) largest key per identity
        chosen = key == np.repeat(best, index.counts, axis=1)
        chosen &= key >= 0.0  # an identity with every item removed keeps none
        if m_rows.size == 0:
            continue
        # each query's kept true match: the largest key among its identity's allowed items
        seg_max = np.repeat(np.maximum.reduceat(m_key, seg_starts), n_match[n_match > 0])
        pick = _first_per_row(m_rows, m_key == seg_max)
        row, col = m_rows[pick], m_cols[pick]  # (H,) queries with a true match
        dm = d[row, col][:, None]
        ahead = d_grouped[row] < dm
        ahead |= (d_grouped[row] == dm) & (index.by_pid[None, :] < col[:, None])
        rank = np.count_nonzero(ahead & chosen[row], axis=1)  # kept items ahead of the match
        cmc[row] += rank[:, None] < ranks_ahead
    return cmc / REPEATS
