"""Weighted composition of loss terms over every head of a model's training output."""

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from reidcli.errors import RecipeError
from reidcli.losses.build import BoundTerm, bind_terms
from reidcli.losses.center import scale_grad
from reidcli.recipe.loss import LossTerm


class TrainOutput(Protocol):
    """What a model returns in training: the logits of every head and the metric features."""

    logits: Sequence[Tensor]
    features: Sequence[Tensor]


class Criterion(nn.Module):
    """Σ_terms weight · Σ_heads term(head, labels), as LightMBN composes its losses.

    Center-loss centres are parameters of this module (one (C, D) set per feature width D,
    shared by the heads of that width), so they follow `.to(device)`, appear in `state_dict()`
    and are optimised in their own group (see `reidcli.engine.optim.build_optimizer`).
    """

    def __init__(
        self,
        terms: Sequence[BoundTerm],
        num_classes: int,
        center_dims: Sequence[int] = (),
        center_lr: float | None = None,
    ):
        super().__init__()
        self.terms = tuple(terms)
        self.num_classes = num_classes
        self.center_lr = center_lr
        self.centers = nn.ParameterDict(
            {str(d): nn.Parameter(torch.randn(num_classes, d)) for d in sorted(set(center_dims))}
        )

    def _centers_for(self, width: int, weight: float) -> Tensor:
        key = str(width)
        if key not in self.centers:
            widths = ", ".join(self.centers.keys()) or "none"
            raise RecipeError(
                f"center loss got {width}-d features but holds centres of width {widths}; "
                "pass every metric feature width to build_criterion(feat_dim=...)"
            )
        # The centres learn at their own rate whatever the term weight: their gradient is
        # divided by it (BoT divides the centre gradient by the weight before its SGD step).
        return scale_grad(self.centers[key], 1.0 / weight)

    def forward(self, output: TrainOutput, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute the total loss and its named parts.

        Args:
            output: training output with `.logits` (list of (B, C)) and `.features` (list of
                (B, D)).
            labels: (B,) training labels.

        Returns:
            `(total, parts)`: the scalar total and, per term key, its weighted sum over heads.

        Raises:
            RecipeError: a term has no head of its kind to apply to, or a centre width is missing.
        """
        heads = {"classification": list(output.logits), "metric": list(output.features)}
        parts: dict[str, Tensor] = {}
        for term in self.terms:
            inputs = heads[term.kind]
            if not inputs:
                what = "logits" if term.kind == "classification" else "metric features"
                raise RecipeError(f"loss term {term.key!r} needs {what} but the model gave none")
            values = []
            for x in inputs:
                if term.uses_centers:
                    centers = self._centers_for(x.shape[1], term.weight)
                    values.append(term.fn(x, labels, centers=centers))
                else:
                    values.append(term.fn(x, labels))
            parts[term.key] = term.weight * torch.stack(values).sum()
        total = torch.stack(list(parts.values())).sum()
        return total, parts

    def extra_repr(self) -> str:
        return ", ".join(f"{t.weight}*{t.key}" for t in self.terms)


def build_criterion(
    terms: Sequence[LossTerm], num_classes: int, feat_dim: int | Sequence[int]
) -> Criterion:
    """Compose the recipe's loss terms into one `Criterion`.

    Args:
        terms: the recipe's `loss` list (term objects or equivalent mappings).
        num_classes: training identities (rows of the center-loss centres).
        feat_dim: width of the metric features, or every width when the model's metric
            features differ in width; center loss holds one centre set per distinct width.

    Returns:
        The criterion; `criterion.center_lr` is the centre learning rate (None without center).

    Raises:
        RecipeError: no term, or an unknown or invalid term.
    """
    bound, center_lr = bind_terms(terms)
    dims = (feat_dim,) if isinstance(feat_dim, int) else tuple(feat_dim)
    center_dims = dims if center_lr is not None else ()
    return Criterion(bound, num_classes, center_dims=center_dims, center_lr=center_lr)
