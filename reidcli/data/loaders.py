"""Training (P×K) and evaluation (ordered) data loaders over manifest rows."""

import pandas as pd
import torch
from torch.utils.data import DataLoader

from reidcli.data.dataset import ImageDataset
from reidcli.data.sampler import IdentityBatchSampler
from reidcli.data.transforms import build_eval_transform, build_train_transform
from reidcli.errors import DatasetError
from reidcli.recipe.data import Data


def build_train_loader(
    frame: pd.DataFrame, cfg: Data, *, seed: int, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """P×K batches of training images with the training transform.

    Rows whose `split` is not "train" are left out when the column is present. The loader's
    `batch_sampler` is the `IdentityBatchSampler`: call `loader.batch_sampler.set_epoch(epoch)`
    before every epoch. Items are dicts (see `ImageDataset`), batched.

    Args:
        frame: manifest rows (path, pid, label, camid[, split]).
        cfg: the recipe's data section (P, K, workers, transform settings).
        seed: seeds the batch sequence and the workers' augmentation randomness.
        rank: this process's rank.
        world_size: number of ranks.

    Raises:
        DatasetError: no training rows, or a training row without a label.
    """
    if "split" in frame.columns:
        frame = frame[frame["split"] == "train"]
    frame = frame.reset_index(drop=True)
    if frame.empty:
        raise DatasetError("the manifest has no training images")
    if (frame["label"] < 0).any():
        raise DatasetError("training rows need a label >= 0 (run `reid prepare` again)")
    sampler = IdentityBatchSampler(
        frame["label"].tolist(), cfg.p, cfg.k, seed=seed, rank=rank, world_size=world_size
    )
    # Each rank's workers draw different augmentations; the seed fixes them run to run.
    generator = torch.Generator().manual_seed(seed * 1009 + rank)
    return DataLoader(
        ImageDataset(frame, build_train_transform(cfg)),
        batch_sampler=sampler,
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
    )


def build_eval_loader(frame: pd.DataFrame, cfg: Data) -> DataLoader:
    """Images in the frame's order, `cfg.eval_batch_size` per batch, evaluation transform.

    Args:
        frame: manifest rows to embed (query or gallery, say).
        cfg: the recipe's data section.
    """
    return DataLoader(
        ImageDataset(frame.reset_index(drop=True), build_eval_transform(cfg)),
        batch_size=cfg.eval_batch_size,
        shuffle=False,
        num_workers=cfg.workers,
        pin_memory=torch.cuda.is_available(),
    )
