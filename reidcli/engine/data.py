"""Training and validation data of a run, with per-sample augmentation seeds.

Every training sample is augmented under a seed derived from (seed, rank, epoch, batch,
position), so an epoch's images are the same whether it runs in one go or is resumed from a
mid-epoch checkpoint, whatever the number of loader workers.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reidcli.data.dataset import ImageDataset
from reidcli.data.manifest import carve_validation, load_manifest
from reidcli.data.sampler import IdentityBatchSampler
from reidcli.data.transforms import build_train_transform
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


class SeededBatches(Sampler):
    """Wraps the identity sampler; yields [(index, sample_seed), ...] per batch."""

    def __init__(self, sampler: IdentityBatchSampler, seed: int, rank: int) -> None:
        self.sampler = sampler
        self.seed, self.rank = seed, rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)
        self.epoch, self.start = epoch, start_batch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for batch_index, batch in enumerate(self.sampler, start=self.start):
            key = [self.seed, self.rank, self.epoch, batch_index]
            seeds = np.random.SeedSequence(key).generate_state(len(batch), dtype=np.uint64)
            yield [(int(i), int(s) >> 1) for i, s in zip(batch, seeds, strict=True)]


class SeededDataset(Dataset):
    """Applies the wrapped dataset's random transforms under each sample's own seed."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def build_train_loader(
    recipe: Recipe, frame: pd.DataFrame, *, rank: int, world_size: int, pin_memory: bool
) -> DataLoader:
    """P×K identity batches of augmented images for this rank."""
    cfg = recipe.data
    sampler = IdentityBatchSampler(
        frame["label"].tolist(),
        cfg.p,
        cfg.k,
        seed=recipe.train.seed,
        rank=rank,
        world_size=world_size,
    )
    dataset = SeededDataset(ImageDataset(frame, build_train_transform(cfg)))
    return DataLoader(
        dataset,
        batch_sampler=SeededBatches(sampler, recipe.train.seed, rank),
        num_workers=cfg.workers,
        pin_memory=pin_memory,
    )


def images_and_labels(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, training labels) from a collated `ImageDataset` batch."""
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    return batch[0], batch[1]
