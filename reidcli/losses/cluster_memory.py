"""The cluster memory of `reid adapt` and its InfoNCE loss (the cluster-contrast family).

The memory holds one L2-normalised centroid per pseudo identity, started from the clusters' mean
embeddings at each clustering. A batch's loss is the cross-entropy of its normalised embeddings'
similarities to every centroid over a temperature τ, against their own cluster:
    L = −mean_i log softmax_c(f_i · m_c / τ)[y_i].
After the loss is computed, every centroid that has crops in the batch moves toward their mean:
    m_c ← normalise(μ · m_c + (1 − μ) · mean_{i: y_i = c} f_i),
with μ the momentum (the weight of the old value).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TARGET, SOURCE = 0, 1  # domain column of `AdaptCriterion`'s labels


class _Rows(NamedTuple):
    """Some rows of a training output, as the recipe's criterion reads it."""

    logits: list[Tensor]
    features: list[Tensor]


class ClusterMemory(nn.Module):
    """One centroid per cluster; `forward` is the InfoNCE loss and, in training, the update.

    Args:
        dim: embedding width.
        temperature: τ.
        momentum: μ, the weight of a centroid's old value.
    """

    def __init__(self, dim: int, temperature: float, momentum: float) -> None:
        super().__init__()
        self.temperature, self.momentum = temperature, momentum
        self.register_buffer("centroids", torch.zeros(0, dim))

    def reset(self, centroids: Tensor) -> None:
        """Start from these (C, dim) centroids (normalised here)."""
        self.centroids = F.normalize(centroids.to(self.centroids), dim=1)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """InfoNCE of (B, dim) features against the memory; labels (B,) in 0..C-1."""
        f = F.normalize(features.float(), dim=1)
        logits = f @ self.centroids.T / self.temperature  # (B, C)
        loss = F.cross_entropy(logits, labels)
        if self.training:
            self.update(f.detach(), labels)
        return loss

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Move each batch cluster's centroid toward the mean of its normalised features."""
        present, inverse = torch.unique(labels, return_inverse=True)  # (P,), (B,)
        sums = torch.zeros(len(present), features.shape[1], device=features.device)
        sums.index_add_(0, inverse, features)
        counts = torch.bincount(inverse, minlength=len(present)).unsqueeze(1)  # (P, 1)
        moved = self.momentum * self.centroids[present] + (1 - self.momentum) * sums / counts
        centroids = self.centroids.clone()  # the loss's graph holds the old tensor
        centroids[present] = F.normalize(moved, dim=1)
        self.centroids = centroids

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the number of clusters changes with every clustering: take the saved shape
        saved = state_dict.get(prefix + "centroids")
        if saved is not None:
            self.centroids = torch.empty(saved.shape, device=self.centroids.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class AdaptCriterion(nn.Module):
    """The memory loss on target crops, plus `source_weight` × the recipe's loss on source crops.

    Labels are (B, 2): the domain (`TARGET` or `SOURCE`) and the cluster or source label.

    Args:
        memory: the cluster memory.
        source: the recipe's criterion for labeled source batches, or None.
        source_weight: its weight.
    """

    def __init__(self, memory: ClusterMemory, source: nn.Module | None, source_weight: float):
        super().__init__()
        self.memory = memory
        self.source = source
        self.source_weight = source_weight

    def forward(self, output, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(total, parts) of a training output (`ReIDOutput`, with its embedding)."""
        if output.embedding is None:
            raise RuntimeError("reid adapt needs a model that returns its embedding in training")
        target = labels[:, 0] == TARGET
        loss = self.memory(output.embedding[target], labels[target, 1])
        parts = {"memory": loss.detach()}
        if self.source is not None and not bool(target.all()):
            rows = ~target
            picked = _Rows(
                [logit[rows] for logit in output.logits], [f[rows] for f in output.features]
            )
            source_loss, source_parts = self.source(picked, labels[rows, 1])
            loss = loss + self.source_weight * source_loss
            parts.update({f"source_{name}": value for name, value in source_parts.items()})
        return loss, parts
