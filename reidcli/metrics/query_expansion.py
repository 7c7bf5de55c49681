"""α-weighted average query expansion (αQE, Radenović et al. 2018)."""

from __future__ import annotations

import torch

from reidcli.metrics.distance import as_tensor, chunk_rows


def expand_queries(query_features, gallery_features, *, k: int = 5, alpha: float = 3.0):
    """Replace each query by the weighted mean of itself and its k nearest gallery items.

    Embeddings are L2-normalised; neighbour g_i (cosine similarity s_i) gets the weight
    max(s_i, 0)^α and the query itself weight 1; the result is L2-normalised again.

    Args:
        query_features: (Q, D) array or tensor.
        gallery_features: (G, D) array or tensor.
        k: Gallery neighbours averaged into each query.
        alpha: Exponent of the similarity weights (0: plain average).

    Returns:
        (Q, D) float32 tensor of expanded query features.
    """
    q = torch.nn.functional.normalize(as_tensor(query_features), dim=1)
    g = torch.nn.functional.normalize(as_tensor(gallery_features), dim=1)
    k = min(k, g.shape[0])
    out = torch.empty_like(q)
    rows = chunk_rows(g.shape[0])
    for s in range(0, q.shape[0], rows):
        sim = q[s : s + rows] @ g.T  # (r, G) cosine similarities
        top_sim, top_idx = torch.topk(sim, k, dim=1)  # (r, k)
        weight = top_sim.clamp(min=0).pow(alpha)
        expanded = q[s : s + rows] + (weight[..., None] * g[top_idx]).sum(1)  # (r, D)
        out[s : s + rows] = torch.nn.functional.normalize(expanded, dim=1)
    return out
