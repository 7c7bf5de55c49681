"""The model catalog: one explicit table from recipe names to builders.

Every builder takes the recipe's `model` section and the number of training classes. `build_model`
also loads `pretrained` weights.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable

from reidcli.errors import RecipeError
from reidcli.models.base import ReIDModel
from reidcli.models.baselines import build_osnet_baseline, build_resnet_baseline
from reidcli.models.lmbn import build_lmbn_n, build_lmbn_r
from reidcli.models.parts import MGN, PCB
from reidcli.models.weights import find_imagenet_file, load_weights
from reidcli.recipe.model import Model

logger = logging.getLogger(__name__)

Builder = Callable[[Model, int], ReIDModel]


def _fixed_stride(cfg: Model) -> None:
    """Models whose strides are part of their definition refuse `last_stride`."""
    if cfg.last_stride is not None:
        raise RecipeError(
            f"model.last_stride: {cfg.name} has no configurable last stride; leave it unset"
        )


def _lmbn_n(cfg: Model, num_classes: int) -> ReIDModel:
    _fixed_stride(cfg)
    return build_lmbn_n(num_classes, cfg.feats, cfg.drop_ratio)


def _lmbn_r(cfg: Model, num_classes: int) -> ReIDModel:
    _fixed_stride(cfg)
    return build_lmbn_r(num_classes, cfg.feats, cfg.drop_ratio)


def _osnet(cfg: Model, num_classes: int) -> ReIDModel:
    _fixed_stride(cfg)
    return build_osnet_baseline(cfg.name, num_classes)


def _resnet50(cfg: Model, num_classes: int) -> ReIDModel:
    return build_resnet_baseline(num_classes, cfg.last_stride or 2)


def _resnet50_ibn_a(cfg: Model, num_classes: int) -> ReIDModel:
    return build_resnet_baseline(num_classes, cfg.last_stride or 2, ibn=True)


def _bot_r50(cfg: Model, num_classes: int) -> ReIDModel:
    return build_resnet_baseline(num_classes, cfg.last_stride or 1)


def _pcb(cfg: Model, num_classes: int) -> ReIDModel:
    return PCB(num_classes, parts=cfg.parts, feats=cfg.feats, last_stride=cfg.last_stride or 1)


def _mgn(cfg: Model, num_classes: int) -> ReIDModel:
    _fixed_stride(cfg)
    return MGN(num_classes, feats=cfg.feats)


# Recipe name -> builder. osnet_*, resnet50* and bot_r50 keep their backbone's width (512 / 2048);
# lmbn_*, pcb and mgn use `feats` per branch.
MODEL_BUILDERS: dict[str, Builder] = {
    "lmbn_n": _lmbn_n,
    "lmbn_r": _lmbn_r,
    "osnet_x1_0": _osnet,
    "osnet_x0_75": _osnet,
    "osnet_x0_5": _osnet,
    "osnet_x0_25": _osnet,
    "resnet50": _resnet50,
    "resnet50_ibn_a": _resnet50_ibn_a,
    "bot_r50": _bot_r50,
    "pcb": _pcb,
    "mgn": _mgn,
}


def get_builder(name: str) -> Builder:
    """The builder of a catalog model.

    Raises:
        RecipeError: for an unknown name, listing the choices and the closest match.
    """
    if name in MODEL_BUILDERS:
        return MODEL_BUILDERS[name]
    close = difflib.get_close_matches(name, MODEL_BUILDERS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise RecipeError(f"unknown model {name!r}; choose one of {', '.join(MODEL_BUILDERS)}{hint}")


def build_model(cfg: Model, num_classes: int) -> ReIDModel:
    """Builds the recipe's model and loads its `pretrained` weights (none | imagenet | path).

    Raises:
        RecipeError: unknown name or unsupported option.
        CheckpointError: weights that are missing or do not fit.
    """
    model = get_builder(cfg.name)(cfg, num_classes)
    if cfg.pretrained == "imagenet":
        report = load_weights(model, find_imagenet_file(model.backbone_name))
        logger.info("ImageNet weights: %s", report)
    elif cfg.pretrained != "none":
        report = load_weights(model, cfg.pretrained)
        logger.info("pretrained weights: %s", report)
    return model
