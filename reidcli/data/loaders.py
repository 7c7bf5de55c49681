"""Training (P×K) and evaluation (ordered) data loaders over manifest rows."""

import pandas as pd
import torch
from torch.utils.data import DataLoader

from reidcli.data.dataset import ImageDataset
from reidcli.data.sampler import IdentityBatchSampler
from reidcli.data.seeding import SeededBatches, SeededDataset
from reidcli.data.transforms import build_eval_transform, build_train_transform
from reidcli.errors import DatasetError
from reidcli.recipe.data import Data


def build_train_loader(
    frame: pd.DataFrame, cfg: Data, *, seed: int, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """P×K batches of training images with the training transform.

    Rows whose `split` is not "train" are left out when the column is present. The loader's
    `batch_sampler` wraps the `IdentityBatchSampler`: call
    `loader.batch_sampler.set_epoch(epoch, start_batch)` before every epoch. Each sample is
    augmented under its own seed (see `reidcli.data.seeding`), so batches are reproducible
    across resumes and worker counts. Items are dicts (see `ImageDataset`), batched.

    Args:
        frame: manifest rows (path, pid, label, camid[, split]).
        cfg: the recipe's data section (P, K, workers, transform settings).
        seed: seeds the batch sequence and every sample's augmentation.
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
    return DataLoader(
        SeededDataset(ImageDataset(frame, build_train_transform(cfg))),
        batch_sampler=SeededBatches(sampler, seed, rank),
        num_workers=cfg.workers,
        pin_memory=torch.cuda.is_available(),
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


def clean_errors(loader):
    """Iterate a loader; a bad image in a worker process becomes one clean `DatasetError`.

    torch re-raises a worker's exception with the worker's whole traceback as its message;
    the message of a `DatasetError` is its last line.
    """
    try:
        yield from loader
    except DatasetError as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        message = lines[-1] if lines else str(err)
        message = message.split("DatasetError: ", 1)[-1]
        raise DatasetError(message) from None
