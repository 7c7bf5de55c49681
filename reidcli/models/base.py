"""The model contract shared by every re-ID network, and the description of foreign weight layouts.

In training a model returns a `ReIDOutput` (logits of every classification head and the features
the metric losses use); in evaluation it returns the raw concatenated embedding. `embed` is the one
definition of the embedding that evaluation, export and `reid embed` all use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMALIZE_CHOICES = ("none", "per_branch", "whole")


class ReIDOutput(NamedTuple):
    """What a model returns in training mode.

    Attributes:
        logits: one (B, num_classes) tensor per classification head.
        features: metric-learning features, e.g. LMBN's glo, glo_drop and g_par before BN.
        embedding: (B, E) the embedding as evaluation computes it (before flip and
            normalisation), from this training-mode pass (what `reid adapt` learns on).
    """

    logits: list[Tensor]
    features: list[Tensor]
    embedding: Tensor | None = None


@dataclass(frozen=True)
class Layout:
    """A state-dict layout from elsewhere that a model knows how to import.

    Attributes:
        name: shown in load reports, e.g. "lightmbn" or "torchvision_resnet50".
        key_map: maps a source key to the model's keys it fills (several when the model holds
            copies of one pretrained stage), to [] for keys known but unused (an ImageNet
            classifier), or to None for keys this layout does not know.
        covers: prefixes of the model's keys that this layout must fill completely ("" = all).
    """

    name: str
    key_map: Callable[[str], list[str] | None]
    covers: tuple[str, ...] = ("",)


def prefix_map(table: dict[str, str | list[str]], ignored: tuple[str, ...] = ()) -> Callable:
    """Builds a key map that renames source prefixes (first match wins).

    Args:
        table: source prefix -> model prefix, or a list of prefixes when the model holds several
            copies of that part (LMBN's branches).
        ignored: source prefixes known to the layout but unused by the model.
    """

    def key_map(key: str) -> list[str] | None:
        if key.startswith(ignored):
            return []
        for source, targets in table.items():
            if key.startswith(source):
                targets = [targets] if isinstance(targets, str) else targets
                return [target + key[len(source) :] for target in targets]
        return None

    return key_map


def is_classifier_key(key: str) -> bool:
    """True for parameters of classification layers (all are named `classifier`)."""
    return key.startswith("classifier.") or ".classifier." in key


class ReIDModel(nn.Module):
    """Base class of every catalog model.

    Subclasses set `branch_dims`, `num_classes` and `backbone_name` (which ImageNet weights
    `pretrained: imagenet` loads), and implement `forward`.
    """

    branch_dims: tuple[int, ...]
    num_classes: int
    backbone_name: str

    @property
    def embedding_dim(self) -> int:
        """Width of the embedding (sum of branch widths)."""
        return sum(self.branch_dims)

    def weight_layouts(self) -> tuple[Layout, ...]:
        """Foreign state-dict layouts this model imports (besides its own)."""
        return ()

    def embed(self, images: Tensor, *, flip: bool = True, normalize: str = "per_branch") -> Tensor:
        """The embedding used by evaluation, export and `reid embed`.

        Args:
            images: (B, 3, H, W) normalised images.
            flip: add the evaluation output of the horizontally flipped images.
            normalize: "per_branch" L2-normalises each branch of `branch_dims`, "whole" the
                full vector, "none" leaves it raw.

        Returns:
            (B, E) embedding, E = sum(branch_dims).

        Raises:
            RuntimeError: if the model is in training mode (BatchNorm would use batch statistics).
        """
        if self.training:
            raise RuntimeError("embed() needs the model in eval mode: call model.eval() first")
        if normalize not in NORMALIZE_CHOICES:
            raise ValueError(f"normalize must be one of {NORMALIZE_CHOICES}, got {normalize!r}")
        if flip:
            # One pass over (2B, 3, H, W): eval-mode BatchNorm makes it equal to two passes.
            both = self(torch.cat([images, images.flip(-1)]))
            emb = both[: images.shape[0]] + both[images.shape[0] :]
        else:
            emb = self(images)
        if normalize == "per_branch":
            emb = torch.cat([F.normalize(b, dim=1) for b in emb.split(self.branch_dims, 1)], 1)
        elif normalize == "whole":
            emb = F.normalize(emb, dim=1)
        return emb


def pool2d(x: Tensor, kind: str) -> Tensor:
    """Global pooling of (B, C, H, W) to (B, C); kind is "avg" or "max"."""
    return x.mean((2, 3)) if kind == "avg" else x.amax((2, 3))


def init_classifier(linear: nn.Linear) -> None:
    """Classifier init used by BNNeck models: N(0, 0.001), zero bias."""
    nn.init.normal_(linear.weight, std=0.001)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
