"""Per-sample augmentation seeds for exact, worker-count-independent training batches.

Every training sample is augmented under a seed derived from (seed, rank, epoch, batch,
position), so an epoch's images are the same whether it runs in one go or is resumed from a
mid-epoch checkpoint, whatever the number of loader workers.
"""

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from reidcli.data.sampler import IdentityBatchSampler


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
