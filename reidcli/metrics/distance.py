"""Query–gallery distances, computed in row chunks so that memory stays bounded.

`cosine` is 1 − cos(q, g); `euclidean` is the squared euclidean distance, as torchreid's
`compute_distance_matrix` returns it (the ranking is that of the plain euclidean distance).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

Metric = Literal["cosine", "euclidean"]
METRICS: tuple[str, ...] = ("cosine", "euclidean")

# About 128 MiB of float32 per (rows, G) block.
BLOCK_ELEMENTS = 1 << 25


def as_tensor(values) -> torch.Tensor:
    """Numpy array or tensor → contiguous float32 CPU tensor (no copy when already one)."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float32).contiguous()
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def chunk_rows(num_cols: int, block_elements: int = BLOCK_ELEMENTS) -> int:
    """Rows per chunk so that a (rows, num_cols) block holds about `block_elements` values."""
    return max(1, block_elements // max(1, num_cols))


def check_metric(metric: str) -> None:
    """Raise ValueError for an unknown metric name."""
    if metric not in METRICS:
        raise ValueError(f"unknown distance {metric!r}; choose one of {', '.join(METRICS)}")


def prepare(features, metric: Metric) -> torch.Tensor:
    """Features ready for `pair_distance`: L2-normalised for cosine, unchanged for euclidean."""
    check_metric(metric)
    x = as_tensor(features)
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    return x


def pair_distance(x: torch.Tensor, y: torch.Tensor, metric: Metric) -> torch.Tensor:
    """Distances between prepared row sets.

    Args:
        x: (M, D) prepared features.
        y: (N, D) prepared features.
        metric: "cosine" or "euclidean".

    Returns:
        (M, N) float32 distances (squared euclidean for "euclidean", clamped at 0).
    """
    if metric == "cosine":
        return torch.addmm(torch.ones(()), x, y.T, beta=1.0, alpha=-1.0)
    x_sq = x.pow(2).sum(1, keepdim=True)  # (M, 1)
    y_sq = y.pow(2).sum(1)  # (N,)
    dist = torch.addmm(x_sq + y_sq, x, y.T, beta=1.0, alpha=-2.0)
    return dist.clamp_(min=0.0)


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
        rows: Queries per block; by default about 128 MiB per block.
    """
    q = prepare(query_features, metric)
    g = prepare(gallery_features, metric)
    rows = rows or chunk_rows(g.shape[0])
    for start in range(0, q.shape[0], rows):
        yield start, pair_distance(q[start : start + rows], g, metric).numpy()


def compute_distance(query_features, gallery_features, metric: Metric = "cosine") -> np.ndarray:
    """The full (Q, G) float32 distance matrix (see `iter_distance_chunks` for large problems)."""
    blocks = [b for _, b in iter_distance_chunks(query_features, gallery_features, metric)]
    return np.concatenate(blocks, axis=0)
