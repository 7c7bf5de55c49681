"""Build a `Criterion` from the recipe's loss terms through one explicit name table."""

import difflib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from reidcli.errors import RecipeError
from reidcli.losses.center import center_loss
from reidcli.losses.criterion import BoundTerm, Criterion
from reidcli.losses.cross_entropy import cross_entropy, focal
from reidcli.losses.multi_similarity import multi_similarity
from reidcli.losses.triplet import batch_hard_triplet, semihard_triplet
from reidcli.recipe.loss import CLASSIFICATION_TERMS, LossTerm

Kind = Literal["classification", "metric"]

# name -> (loss function, recipe fields passed to it as keyword arguments)
LOSSES: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "cross_entropy": (cross_entropy, ("label_smoothing",)),
    "focal": (focal, ("alpha", "gamma")),
    "triplet": (batch_hard_triplet, ("margin",)),
    "triplet_semihard": (semihard_triplet, ("margin",)),
    "multi_similarity": (multi_similarity, ("margin", "alpha", "beta", "threshold")),
    "center": (center_loss, ()),
}

_ADAPTER: TypeAdapter = TypeAdapter(LossTerm)


def _validated(term: Any) -> Any:
    """Accept recipe term objects or plain mappings; anything else is a recipe error."""
    name = term.get("name") if isinstance(term, Mapping) else getattr(term, "name", None)
    if name not in LOSSES:
        close = difflib.get_close_matches(str(name), LOSSES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"unknown loss term {name!r}{hint}; known: {', '.join(LOSSES)}")
    if isinstance(term, Mapping):
        try:
            return _ADAPTER.validate_python(dict(term))
        except ValidationError as err:
            raise RecipeError(f"invalid loss term {name!r}: {err}") from err
    return term


def build_criterion(
    terms: Sequence[LossTerm], num_classes: int, feat_dim: int | Sequence[int]
) -> Criterion:
    """Compose the recipe's loss terms into one `Criterion`.

    Args:
        terms: the recipe's `loss` list (term objects or equivalent mappings).
        num_classes: training identities (rows of the center-loss centres).
        feat_dim: width of the metric features, or every distinct width when the model's metric
            features differ in width; center loss holds one centre set per width.

    Returns:
        The criterion; `criterion.center_lr` is the centre learning rate (None without center).

    Raises:
        RecipeError: no term, or an unknown or invalid term.
    """
    if not terms:
        raise RecipeError("the loss has no term")
    dims = (feat_dim,) if isinstance(feat_dim, int) else tuple(feat_dim)
    bound: list[BoundTerm] = []
    keys: set[str] = set()
    center_lr = None
    for raw in terms:
        term = _validated(raw)
        fn, fields = LOSSES[term.name]
        key, n = term.name, 2
        while key in keys:  # two terms of one kind (say two margins) log apart
            key, n = f"{term.name}_{n}", n + 1
        keys.add(key)
        kind: Kind = "classification" if term.name in CLASSIFICATION_TERMS else "metric"
        params = {f: getattr(term, f) for f in fields}
        uses_centers = term.name == "center"
        if uses_centers:
            center_lr = term.lr
        bound.append(BoundTerm(key, kind, term.weight, partial(fn, **params), uses_centers))
    center_dims = dims if center_lr is not None else ()
    return Criterion(bound, num_classes, center_dims=center_dims, center_lr=center_lr)
