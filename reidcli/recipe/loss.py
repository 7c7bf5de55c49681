"""The `loss` section: a list of weighted terms, discriminated by `name`.

The LightMBN string form (`0.5*CrossEntropy+0.5*MSLoss`) is rewritten to the list form before
validation; an unknown term is an error, never silently dropped.
"""

import re
from typing import Annotated, Literal

from pydantic import Field

from reidcli.recipe.base import Section


class _Term(Section):
    name: str
    weight: float = Field(1.0, gt=0, description="multiplier of this term's sum over heads")


class CrossEntropy(_Term):
    """Cross-entropy with label smoothing on every classification head."""

    name: Literal["cross_entropy"] = "cross_entropy"
    label_smoothing: float = Field(0.1, ge=0, lt=1)


class Focal(_Term):
    """Focal loss (Lin et al. 2017) on every classification head."""

    name: Literal["focal"] = "focal"
    alpha: float = Field(1.0, gt=0)
    gamma: float = Field(2.0, ge=0)


class Triplet(_Term):
    """Batch-hard triplet loss on un-normalised features; margin 0 selects the soft margin."""

    name: Literal["triplet"] = "triplet"
    margin: float = Field(0.3, ge=0)


class TripletSemihard(_Term):
    """Triplet loss with semi-hard negatives (closest negative farther than the positive)."""

    name: Literal["triplet_semihard"] = "triplet_semihard"
    margin: float = Field(0.3, gt=0)


class MultiSimilarity(_Term):
    """Multi-similarity loss (Wang et al. 2019) on L2-normalised features."""

    name: Literal["multi_similarity"] = "multi_similarity"
    margin: float = Field(0.1, gt=0, description="mining margin ε")
    alpha: float = Field(2.0, gt=0, description="positive scale")
    beta: float = Field(40.0, gt=0, description="negative scale")
    threshold: float = Field(0.5, description="similarity threshold λ")


class Center(_Term):
    """Center loss (Wen et al. 2016); the centres are learnt in their own parameter group."""

    name: Literal["center"] = "center"
    weight: float = Field(0.0005, gt=0)
    lr: float = Field(0.5, gt=0, description="SGD learning rate of the centres")


LossTerm = Annotated[
    CrossEntropy | Focal | Triplet | TripletSemihard | MultiSimilarity | Center,
    Field(discriminator="name"),
]
CLASSIFICATION_TERMS = ("cross_entropy", "focal")
METRIC_TERMS = ("triplet", "triplet_semihard", "multi_similarity", "center")
LOSS_NAMES = CLASSIFICATION_TERMS + METRIC_TERMS

# LightMBN's names (its `--loss` argument) mapped to ours.
LIGHTMBN_NAMES = {
    "crossentropy": "cross_entropy",
    "triplet": "triplet",
    "tripletsemihard": "triplet_semihard",
    "msloss": "multi_similarity",
    "multisimilarity": "multi_similarity",
    "center": "center",
    "centerloss": "center",
    "focal": "focal",
    "focalloss": "focal",
}
_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)\s*\*\s*)?([A-Za-z_]+)\s*$")


def parse_loss_string(text: str) -> list[dict]:
    """Rewrite `0.5*CrossEntropy+0.5*MSLoss` to `[{name: cross_entropy, weight: 0.5}, ...]`.

    Raises:
        ValueError: a term that does not parse or names an unknown loss.
    """
    terms = []
    for part in text.split("+"):
        match = _TERM.match(part)
        if match is None:
            raise ValueError(f"cannot parse loss term {part.strip()!r} (expected WEIGHT*Name)")
        weight, raw = match.groups()
        key = raw.lower().replace("_", "")
        name = LIGHTMBN_NAMES.get(key) or (raw if raw in LOSS_NAMES else None)
        if name is None:
            known = ", ".join(sorted({*LIGHTMBN_NAMES.values()}))
            raise ValueError(f"unknown loss term {raw!r}; known terms: {known}")
        terms.append({"name": name, "weight": float(weight) if weight else 1.0})
    return terms
