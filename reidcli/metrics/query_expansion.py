"""α-weighted average query expansion (αQE, Radenović et al. 2018), in numpy."""

from __future__ import annotations

import numpy as np

from reidcli.metrics.distance import as_array, chunk_rows, normalize


def expand_queries(query_features, gallery_features, *, k: int, alpha: float) -> np.ndarray:
    """Replace each query by the weighted mean of itself and its k nearest gallery items.

    Embeddings are L2-normalised; neighbour g_i (cosine similarity s_i) gets the weight
    max(s_i, 0)^α and the query itself weight 1; the result is L2-normalised again.

    Args:
        query_features: (Q, D) array or tensor.
        gallery_features: (G, D) array or tensor.
        k: Gallery neighbours averaged into each query.
        alpha: Exponent of the similarity weights (0: plain average).

    Returns:
        (Q, D) float32 array of expanded query features.
    """
    q = normalize(as_array(query_features))
    g = normalize(as_array(gallery_features))
    k = min(k, g.shape[0])
    out = np.empty_like(q)
    rows = chunk_rows(g.shape[0])
    for s in range(0, q.shape[0], rows):
        sim = q[s : s + rows] @ g.T  # (r, G) cosine similarities
        top_idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (r, k), any order
        top_sim = np.take_along_axis(sim, top_idx, axis=1)
        weight = np.maximum(top_sim, 0.0) ** np.float32(alpha)  # 0^0 = 1, as torch
        expanded = q[s : s + rows] + np.einsum("rk,rkd->rd", weight, g[top_idx])  # (r, D)
        out[s : s + rows] = normalize(expanded)
    return out
