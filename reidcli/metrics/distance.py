"""Query–gallery distances in numpy, computed in row chunks so that memory stays bounded.

`cosine` is 1 − cos(q, g); `euclidean` is the squared euclidean distance, as torchreid's
`compute_distance_matrix` returns it (the ranking is that of the plain euclidean distance).
The products go through BLAS (`np.matmul` on float32 uses every core); no torch is imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np

Metric = Literal["cosine", "euclidean"]
METRICS: tuple[str, ...] = ("cosine", "euclidean")

# About 16 MiB of float32 per (rows, G) block: big enough for full-speed BLAS, small enough
# to keep the process's peak memory low.
BLOCK_ELEMENTS = 1 << 22
# torch.nn.functional.normalize's eps: rows with a smaller norm are divided by it instead.
NORM_EPS = 1e-12


def as_array(values) -> np.ndarray:
    """Numpy array or torch tensor (duck-typed, any device) → C-contiguous float32 array.

    No copy when `values` already is one.
    """
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        # numpy has no bfloat16: widen it (any float dtype becomes float32 below anyway)
        values = values.float().numpy() if str(values.dtype) == "torch.bfloat16" else values.numpy()
    return np.ascontiguousarray(values, dtype=np.float32)


def normalize(x: np.ndarray) -> np.ndarray:
    """(N, D) rows divided by their L2 norm (at least NORM_EPS), as a new float32 array."""
    norm = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float32))  # (N,)
    return x / np.maximum(norm, NORM_EPS)[:, None]


def chunk_rows(num_cols: int, block_elements: int | None = None) -> int:
    """Rows per chunk so that a (rows, num_cols) block holds about `block_elements` values
    (default BLOCK_ELEMENTS)."""
    return max(1, (block_elements or BLOCK_ELEMENTS) // max(1, num_cols))


def check_metric(metric: str) -> None:
    """Raise ValueError for an unknown metric name."""
    if metric not in METRICS:
        raise ValueError(f"unknown distance {metric!r}; choose one of {', '.join(METRICS)}")


def prepare(features, metric: Metric) -> np.ndarray:
    """Features ready for `pair_distance`: L2-normalised for cosine, unchanged for euclidean."""
    check_metric(metric)
    x = as_array(features)
    return normalize(x) if metric == "cosine" else x


def squared_norms(x: np.ndarray) -> np.ndarray:
    """(N,) float32 squared L2 norms of the rows of (N, D) x."""
    return np.einsum("ij,ij->i", x, x, dtype=np.float32)


def pair_distance(
    x: np.ndarray, y: np.ndarray, metric: Metric, y_sq: np.ndarray | None = None
) -> np.ndarray:
    """Distances between prepared row sets, computed in one (M, N) buffer.

    Args:
        x: (M, D) prepared features.
        y: (N, D) prepared features.
        metric: "cosine" or "euclidean".
        y_sq: (N,) squared norms of y, when the caller already has them (euclidean only).

    Returns:
        (M, N) float32 distances (squared euclidean for "euclidean", clamped at 0).
    """
    dist = x @ y.T  # (M, N) BLAS sgemm, multi-threaded
    if metric == "cosine":
        np.subtract(1.0, dist, out=dist)
        return dist
    # ‖x‖² + ‖y‖² − 2·x·y, in place
    dist *= -2.0
    dist += squared_norms(x)[:, None]
    dist += squared_norms(y) if y_sq is None else y_sq
    return np.maximum(dist, 0.0, out=dist)


def iter_distance_chunks(
    query_features,
    gallery_features,
    metric: Metric = "cosine",
    rows: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first query index, (rows, G) float32 distance block) over the query set.

    Args:
        query_features: (Q, D) array or tensor.
        gallery_features: (G, D) array or tensor.
        metric: "cosine" or "euclidean".
        rows: Queries per block; by default about 16 MiB per block.
    """
    q = prepare(query_features, metric)
    g = prepare(gallery_features, metric)
    g_sq = squared_norms(g) if metric == "euclidean" else None
    rows = rows or chunk_rows(g.shape[0])
    for start in range(0, q.shape[0], rows):
        yield start, pair_distance(q[start : start + rows], g, metric, g_sq)


def compute_distance(query_features, gallery_features, metric: Metric = "cosine") -> np.ndarray:
    """The full (Q, G) float32 distance matrix (see `iter_distance_chunks` for large problems)."""
    out = np.empty((np.shape(query_features)[0], np.shape(gallery_features)[0]), np.float32)
    for start, block in iter_distance_chunks(query_features, gallery_features, metric):
        out[start : start + len(block)] = block
    return out
