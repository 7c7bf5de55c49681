"""Trained models for evaluation: find the checkpoint, rebuild the model, embed a split."""

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reidcli.data.manifest import load_manifest
from reidcli.engine.checkpoint import load_checkpoint, saved_recipe
from reidcli.engine.runtime import Runtime
from reidcli.engine.validate import embed_frame
from reidcli.errors import CheckpointError, DatasetError
from reidcli.metrics.features import Features
from reidcli.models.catalog import build_model
from reidcli.models.weights import load_weights, read_state_dict
from reidcli.recipe import Recipe, load_recipe, validate_recipe
from reidcli.reporting import Reporter

log = logging.getLogger(__name__)

SPLITS = {"test": ("query", "gallery"), "val": ("val_query", "val_gallery")}


def load_trained_model(
    checkpoint: Path, recipe_path: str | Path | None = None
) -> tuple[nn.Module, Recipe]:
    """Rebuild the model of a checkpoint and load its weights.

    A reid training checkpoint carries its recipe. Any other weights file (a LightMBN
    `model-best.pth`, a bare state dict) needs `recipe_path` to say which model it holds.

    Raises:
        CheckpointError: the weights do not fit the recipe's model (keys or shapes listed).
    """
    if recipe_path is not None:
        recipe = load_recipe(recipe_path)
        state = read_state_dict(checkpoint)
        num_classes = _classes_in(state)
    else:
        try:
            saved = load_checkpoint(checkpoint)
        except CheckpointError as err:
            raise CheckpointError(
                f"{err}; for weights trained elsewhere pass the recipe with --recipe"
            ) from None
        recipe = validate_recipe(saved_recipe(saved, checkpoint), source=f"{checkpoint} (recipe)")
        state, num_classes = saved["model"], saved["num_classes"]
    bare = recipe.model.model_copy(update={"pretrained": "none"})
    model = build_model(bare, num_classes)
    load_weights(model, state, strict_classifier=False)
    return model.eval(), recipe


def _classes_in(state: dict) -> int:
    """Class count of a foreign state dict's classifiers (evaluation does not use them)."""
    rows = [v.shape[0] for k, v in state.items() if "classifier" in k and v.ndim == 2]
    return int(rows[0]) if rows else 1


def split_size(recipe: Recipe, split: str) -> int:
    """How many query and gallery images `split` of the recipe's prepared dataset holds."""
    frame = load_manifest(recipe.data.root, recipe.data.manifest)
    return int(frame["split"].isin(SPLITS[split]).sum())


def embed_split(
    model: nn.Module, recipe: Recipe, split: str, runtime: Runtime, reporter: Reporter | None = None
) -> Features:
    """Embed the query and gallery of the prepared dataset named in the recipe."""
    frame = load_manifest(recipe.data.root, recipe.data.manifest)
    query_split, gallery_split = SPLITS[split]
    query = frame[frame["split"] == query_split].reset_index(drop=True)
    gallery = frame[frame["split"] == gallery_split].reset_index(drop=True)
    if query.empty or gallery.empty:
        hint = " (prepare with --val-ids N)" if split == "val" else ""
        raise DatasetError(f"{recipe.data.root}: no {query_split}/{gallery_split} images{hint}")
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    reporter = reporter or Reporter()
    reporter.start(f"embedding {split} query + gallery", len(query) + len(gallery))
    qf = embed_frame(model, query, recipe, runtime, reporter.advance)
    gf = embed_frame(model, gallery, recipe, runtime, reporter.advance)
    reporter.finish(f"embedded {len(query)} query and {len(gallery)} gallery images")
    return Features(
        qf,
        gf,
        query["pid"].to_numpy(np.int64),
        gallery["pid"].to_numpy(np.int64),
        query["camid"].to_numpy(np.int64),
        gallery["camid"].to_numpy(np.int64),
        query["path"].to_numpy(str),
        gallery["path"].to_numpy(str),
    )
