"""Training and validation data of a run."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from reidcli.data.manifest import carve_validation, load_manifest
from reidcli.data.unlabeled import is_unlabeled
from reidcli.errors import DatasetError
from reidcli.recipe import Recipe


@dataclass
class RunData:
    """The frames a run trains and validates on."""

    train: pd.DataFrame
    val_query: pd.DataFrame | None
    val_gallery: pd.DataFrame | None
    num_classes: int


def load_run_data(recipe: Recipe) -> RunData:
    """Read the prepared manifest; carve validation identities when asked and none exist."""
    frame = load_manifest(recipe.data.root, recipe.data.manifest)
    if is_unlabeled(frame):
        raise DatasetError(
            f"{recipe.data.root} holds unlabeled crops (reid prepare --unlabeled): training needs "
            "identities; adapt a trained model to these cameras with `reid adapt` (adapt.target)"
        )
    if not (frame["split"] == "val_query").any() and recipe.train.val_ids > 0:
        frame = carve_validation(frame, recipe.train.val_ids, recipe.train.seed)
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    if train.empty:
        raise DatasetError(f"{recipe.data.root}: the manifest has no training images")
    labels = np.sort(train["label"].unique())
    if labels[0] != 0 or labels[-1] != len(labels) - 1:
        raise DatasetError(f"{recipe.data.root}: training labels are not 0..N-1; re-run prepare")
    if len(labels) < recipe.data.p:
        raise DatasetError(
            f"{recipe.data.root}: {len(labels)} training identities, fewer than data.p "
            f"({recipe.data.p}) identities per batch"
        )
    val_query = frame[frame["split"] == "val_query"].reset_index(drop=True)
    val_gallery = frame[frame["split"] == "val_gallery"].reset_index(drop=True)
    if val_query.empty or val_gallery.empty:
        val_query = val_gallery = None
    return RunData(train, val_query, val_gallery, len(labels))


def images_and_labels(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, training labels) from a collated `ImageDataset` batch."""
    return batch["image"], batch["label"]
