"""CUHK03 classic single-gallery-shot CMC: one random gallery image per identity, repeated.

As torchreid's `eval_cuhk03`: after removing same-identity same-camera items, every identity
keeps one random gallery image, the CMC of that reduced gallery is taken, and the curve is
averaged over the repeats. The draws are seeded; they are not the reference's random stream.
"""

from __future__ import annotations

import numpy as np
import torch

REPEATS = 10
# About 32 MiB of float64 per (rows, G) working block.
WORK_ELEMENTS = 1 << 22


def single_shot_cmc(
    dist, q_pids, q_camids, g_pids, g_camids, rng: np.random.Generator, max_rank: int = 50
) -> np.ndarray:
    """Per-query single-gallery-shot CMC curves of a block of queries.

    Args:
        dist: (R, G) distances.
        q_pids: (R,) query ids.
        q_camids: (R,) query cameras.
        g_pids: (G,) gallery ids.
        g_camids: (G,) gallery cameras.
        rng: Random generator, advanced in query order.
        max_rank: Length of the curve.

    Returns:
        (R, max_rank) float64 curves averaged over the repeats (zeros for skipped queries).
    """
    rows = max(1, WORK_ELEMENTS // max(1, np.shape(dist)[1]))
    parts = [
        _single_shot_rows(
            dist[s : s + rows], q_pids[s : s + rows], q_camids[s : s + rows], g_pids, g_camids,
            rng, max_rank,
        )
        for s in range(0, len(q_pids), rows)
    ]  # fmt: skip
    return np.concatenate(parts)


def _single_shot_rows(dist, q_pids, q_camids, g_pids, g_camids, rng, max_rank) -> np.ndarray:
    d = torch.as_tensor(dist)
    qp, qc = torch.as_tensor(q_pids), torch.as_tensor(q_camids)
    gp, gc = torch.as_tensor(g_pids), torch.as_tensor(g_camids)
    num, num_g = d.shape
    _, pid_idx = torch.unique(gp, return_inverse=True)  # (G,) identity index per item
    num_pids = int(pid_idx.max()) + 1
    same = qp[:, None] == gp[None, :]
    keep = ~(same & (qc[:, None] == gc[None, :]))  # (R, G)
    # position of every item in the stable distance order: ties broken by gallery index
    order = torch.sort(d, dim=1, stable=True).indices
    position = torch.empty_like(order).scatter_(
        1, order, torch.arange(num_g).expand(num, num_g).contiguous()
    )
    group = pid_idx.expand(num, num_g)
    cmc = torch.zeros((num, max_rank), dtype=torch.float64)
    for _ in range(REPEATS):
        key = torch.from_numpy(rng.random((num, num_g))).masked_fill(~keep, -1.0)
        best = torch.full((num, num_pids), -1.0, dtype=torch.float64)
        best = best.scatter_reduce(1, group, key, "amax")
        chosen = keep & (key == best.gather(1, group))  # (R, G) one item per identity
        match_pos = torch.where(chosen & same, position, num_g).min(1).values  # (R,)
        rank = (chosen & (position < match_pos[:, None])).sum(1)  # chosen items ahead
        hit = (match_pos < num_g)[:, None] & (rank[:, None] < torch.arange(1, max_rank + 1))
        cmc += hit.double()
    return (cmc / REPEATS).numpy()
