"""Triplet losses on un-normalised features with euclidean distances."""

import torch
import torch.nn.functional as F
from torch import Tensor

from reidcli.losses.cross_entropy import as_float


def pairwise_euclidean(x: Tensor) -> Tensor:
    """Euclidean distances between the rows of `x`.

    Args:
        x: (B, D) features.

    Returns:
        (B, B) distances; the diagonal is exactly 1e-6 with no gradient (the square is clamped
        below at 1e-12 so that the square root keeps a finite gradient).
    """
    sq = x.pow(2).sum(1)
    # (B, B) ‖a‖² + ‖b‖² − 2ab; rounding can leave tiny negatives and a non-zero diagonal.
    d2 = sq[:, None] + sq[None, :] - 2 * x @ x.t()
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    return d2.masked_fill(eye, 0).clamp_min(1e-12).sqrt()


def _masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(B, B) same-identity mask (diagonal included) and different-identity mask."""
    same = labels[:, None] == labels[None, :]
    return same, ~same


def _mean_or_zero(values: Tensor, keep: Tensor, anchor: Tensor) -> Tensor:
    """Mean of `values[keep]`, or a zero that stays connected to the graph of `anchor`."""
    if keep.any():
        return values[keep].mean()
    return anchor.sum() * 0


def batch_hard_triplet(features: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017): hardest positive and negative per anchor.

    The hardest positive of an anchor alone in its identity is the anchor itself. Anchors with no
    negative in the batch are left out of the mean.

    Args:
        features: (B, D) un-normalised features.
        labels: (B,) identity labels.
        margin: the hinge margin; 0 selects the soft margin log(1 + exp(d_ap − d_an)).

    Returns:
        A scalar tensor.
    """
    x = as_float(features)
    dist = pairwise_euclidean(x)
    same, diff = _masks(labels)
    # (B,) farthest positive and closest negative of every anchor.
    d_ap = dist.masked_fill(~same, float("-inf")).amax(1)
    d_an = dist.masked_fill(~diff, float("inf")).amin(1)
    has_neg = diff.any(1)
    gap = d_ap - d_an.masked_fill(~has_neg, 0)
    per_anchor = F.softplus(gap) if margin == 0 else F.relu(gap + margin)
    return _mean_or_zero(per_anchor, has_neg, x)


def semihard_triplet(features: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Triplet loss over every (anchor, positive) pair with a semi-hard negative.

    The negative of a pair is the closest one farther from the anchor than the positive; when no
    negative is farther, the farthest negative is used (as FaceNet's reference does). Pairs whose
    anchor has no negative are left out of the mean.

    Args:
        features: (B, D) un-normalised features.
        labels: (B,) identity labels.
        margin: the hinge margin.

    Returns:
        A scalar tensor.
    """
    x = as_float(features)
    dist = pairwise_euclidean(x)
    same, diff = _masks(labels)
    n = len(x)
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    pairs = same & ~eye & diff.any(1, keepdim=True)
    # (B, B) each anchor's negative distances in ascending order, +inf past its last negative.
    neg_sorted = dist.masked_fill(~diff, float("inf")).sort(1).values
    count = diff.sum(1, keepdim=True)
    # (B, B) position of the first negative strictly farther than each candidate positive.
    first = torch.searchsorted(
        neg_sorted.detach().contiguous(), dist.detach().contiguous(), right=True
    )
    fallback = (count - 1).clamp_min(0).expand(n, n)
    pos = torch.where(first < count, first, fallback)
    d_an = neg_sorted.gather(1, pos)
    per_pair = F.relu(dist - d_an.masked_fill(~pairs, 0) + margin)
    return _mean_or_zero(per_pair, pairs, x)
