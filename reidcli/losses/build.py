"""The explicit table of loss terms and their binding to recipe parameters."""

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError
from torch import Tensor

from reidcli.errors import RecipeError
from reidcli.losses.center import center_loss
from reidcli.losses.cross_entropy import cross_entropy, focal
from reidcli.losses.multi_similarity import multi_similarity
from reidcli.losses.triplet import batch_hard_triplet, semihard_triplet
from reidcli.recipe.loss import CLASSIFICATION_TERMS, LossTerm


@dataclass(frozen=True)
class BoundTerm:
    """One recipe term ready to apply.

    Attributes:
        key: name of its part in the logged dictionary (unique within a criterion).
        kind: "classification" terms see every logit tensor, "metric" terms every feature.
        weight: multiplier of the sum over heads.
        fn: `fn(x, labels)` for one head; centre-based terms receive `centers=` as well.
        uses_centers: the term needs the centre set matching the feature width.
    """

    key: str
    kind: Literal["classification", "metric"]
    weight: float
    fn: Callable[..., Tensor]
    uses_centers: bool = False


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


def bind_terms(terms: Sequence[LossTerm]) -> tuple[list[BoundTerm], float | None]:
    """Bind every recipe term to its loss function.

    Args:
        terms: the recipe's `loss` list (term objects or equivalent mappings).

    Returns:
        The bound terms (keys unique) and the centre learning rate (None without center loss).

    Raises:
        RecipeError: no term, or an unknown or invalid term.
    """
    if not terms:
        raise RecipeError("the loss has no term")
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
    return bound, center_lr
