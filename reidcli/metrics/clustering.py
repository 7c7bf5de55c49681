"""Pseudo identities for unlabeled crops: DBSCAN over the k-reciprocal Jaccard distance.

The Jaccard distance (`rerank.iter_jaccard`) is 1 between crops whose k-reciprocal encodings share
nothing, so only the pairs below 1 are kept: about N·k1² entries, not N². DBSCAN on them: a crop
is a core crop when at least `min_samples` crops (itself included) lie within `eps`; core crops
within `eps` of each other share a cluster; a crop that is not core joins the cluster of its
nearest core crop within `eps` (ties: the lower index), else it is an outlier (label -1). Clusters
are numbered in the order of their first crop, so the labels depend on the distances only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidcli.metrics.distance import Metric
from reidcli.metrics.rerank import iter_jaccard


@dataclass(frozen=True)
class SparseDistances:
    """The pairs (i, j), i ≠ j, of N items closer than 1, each pair in both orders.

    Attributes:
        n: number of items.
        rows: (nnz,) int64 first item of each pair, ascending.
        cols: (nnz,) int64 second item.
        dists: (nnz,) float32 distance.
    """

    n: int
    rows: np.ndarray
    cols: np.ndarray
    dists: np.ndarray


def jaccard_pairs(
    features, *, k1: int, k2: int, metric: Metric = "cosine", progress=None
) -> SparseDistances:
    """Every pair of distinct items whose Jaccard distance is below 1.

    Args:
        features: (N, D) array or tensor.
        k1, k2, metric: as `rerank.iter_jaccard`.
        progress: optional callable advanced with the rows of each finished block.
    """
    rows, cols, dists = [], [], []
    n = len(features)
    for start, block in iter_jaccard(features, k1=k1, k2=k2, metric=metric):
        if progress is not None:
            progress(len(block))
        r, c = np.nonzero(block < 1.0)  # (nnz_block,)
        keep = start + r != c
        rows.append(start + r[keep])
        cols.append(c[keep])
        dists.append(block[r[keep], c[keep]].astype(np.float32))
    return SparseDistances(
        n, np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64),
        np.concatenate(dists),
    )  # fmt: skip


def kth_neighbour_distance(pairs: SparseDistances, k: int) -> np.ndarray:
    """(N,) distance of each item to its k-th nearest other item (1.0 where it has fewer)."""
    out = np.ones(pairs.n, dtype=np.float32)
    order = np.lexsort((pairs.dists, pairs.rows))  # by row, then distance
    rows, dists = pairs.rows[order], pairs.dists[order]
    starts = np.searchsorted(rows, np.arange(pairs.n))
    ends = np.searchsorted(rows, np.arange(pairs.n), side="right")
    has = ends - starts >= k
    out[has] = dists[starts[has] + k - 1]
    return out


def auto_eps(pairs: SparseDistances, neighbours: float) -> float:
    """The mean distance of the N·neighbours closest (ordered) pairs of the N items.

    Song et al. ("Unsupervised domain adaptive re-identification: theory and practice", 2018)
    take the mean of a fixed share ρ of all N² pairs, which assumes the share of same-person
    pairs is the same in every target; a share of about `neighbours` pairs per item holds from a
    few hundred crops to millions. Either way the radius follows the target's own distances
    under the current model (it shrinks as the model separates people), not a constant. Pairs
    not held (distance 1) count as 1.
    """
    count = max(1, min(round(neighbours * pairs.n), pairs.n * (pairs.n - 1)))
    held = np.sort(pairs.dists)[:count].astype(np.float64)
    return float((held.sum() + (count - len(held))) / count)


def dbscan(pairs: SparseDistances, eps: float, min_samples: int) -> np.ndarray:
    """(N,) int64 cluster of every item, -1 for outliers (see the module docstring)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = pairs.n
    near = pairs.dists <= eps
    rows, cols, dists = pairs.rows[near], pairs.cols[near], pairs.dists[near]
    core = 1 + np.bincount(rows, minlength=n) >= min_samples  # (N,) bool
    both = core[rows] & core[cols]
    graph = coo_matrix((np.ones(int(both.sum())), (rows[both], cols[both])), shape=(n, n))
    _, component = connected_components(graph.tocsr(), directed=False)
    labels = np.where(core, component, -1).astype(np.int64)
    # a border item joins the cluster of its nearest core item (lowest index on ties)
    border = ~core[rows] & core[cols]
    if border.any():
        b_rows, b_cols, b_dists = rows[border], cols[border], dists[border]
        order = np.lexsort((b_cols, b_dists, b_rows))
        b_rows, b_cols = b_rows[order], b_cols[order]
        first = np.concatenate([[True], b_rows[1:] != b_rows[:-1]])
        labels[b_rows[first]] = labels[b_cols[first]]
    return renumber(labels)


def renumber(labels: np.ndarray) -> np.ndarray:
    """Clusters numbered 0..C-1 in the order of their first item; -1 stays -1."""
    out = np.full(len(labels), -1, dtype=np.int64)
    clustered = labels >= 0
    if clustered.any():
        _, first, inverse = np.unique(labels[clustered], return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))  # cluster -> its position by first item
        out[clustered] = rank[inverse]
    return out


def cluster_sizes(labels: np.ndarray) -> dict[str, int | float]:
    """Clusters, outliers and the clusters' size distribution, for the run's metrics."""
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, np.int64)
    summary: dict[str, int | float] = {
        "clusters": len(sizes),
        "outliers": int((labels < 0).sum()),
        "clustered": int(sizes.sum()),
    }
    if len(sizes):
        summary.update(
            size_min=int(sizes.min()), size_p10=float(np.percentile(sizes, 10)),
            size_median=float(np.median(sizes)), size_p90=float(np.percentile(sizes, 90)),
            size_max=int(sizes.max()),
        )  # fmt: skip
    return summary
