"""Multi-similarity loss (Wang et al., CVPR 2019) with LightMBN's pair mining."""

import torch
import torch.nn.functional as F
from torch import Tensor

from reidcli.losses.cross_entropy import as_float

# Similarities this close to 1 are the anchor itself (or an exact duplicate) and are not pairs.
_SELF = 1e-5


def _log1p_sum_exp(z: Tensor, keep: Tensor) -> Tensor:
    """(B,) log(1 + Σ_j exp(z_ij)) over the kept entries of each row, computed stably."""
    masked = z.masked_fill(~keep, float("-inf"))
    # A zero column stands for the 1: rows with nothing kept give log 1 = 0 and a finite gradient.
    padded = torch.cat([masked.new_zeros(len(z), 1), masked], dim=1)
    return padded.logsumexp(1)


def multi_similarity(
    features: Tensor,
    labels: Tensor,
    margin: float = 0.1,
    alpha: float = 2.0,
    beta: float = 40.0,
    threshold: float = 0.5,
) -> Tensor:
    """Multi-similarity loss on L2-normalised features with cosine similarity S.

    Mining per anchor i: a negative is kept when S_in + margin > min positive S, a positive when
    S_ip − margin < max negative S. An anchor with no kept positive or no kept negative
    contributes 0; the sum is divided by the batch size B.

    Args:
        features: (B, D) features (normalised here).
        labels: (B,) identity labels.
        margin: mining margin ε.
        alpha: positive scale α.
        beta: negative scale β.
        threshold: similarity threshold λ.

    Returns:
        A scalar tensor.
    """
    x = F.normalize(as_float(features), dim=1)
    sim = x @ x.t()  # (B, B) cosine similarities
    same = labels[:, None] == labels[None, :]
    pos = same & (sim < 1 - _SELF)
    neg = ~same
    # (B, 1) hardest positive and hardest negative similarity of each anchor.
    min_pos = sim.masked_fill(~pos, float("inf")).amin(1, keepdim=True)
    max_neg = sim.masked_fill(~neg, float("-inf")).amax(1, keepdim=True)
    neg_kept = neg & (sim + margin > min_pos)
    pos_kept = pos & (sim - margin < max_neg)
    valid = neg_kept.any(1) & pos_kept.any(1)
    pos_loss = _log1p_sum_exp(-alpha * (sim - threshold), pos_kept) / alpha
    neg_loss = _log1p_sum_exp(beta * (sim - threshold), neg_kept) / beta
    per_anchor = (pos_loss + neg_loss) * valid
    return per_anchor.sum() / len(x)
