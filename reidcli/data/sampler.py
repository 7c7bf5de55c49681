"""P×K identity batches (P identities × K images each) for metric-learning losses."""

from collections.abc import Iterator, Sequence

import numpy as np
import torch.utils.data

from reidcli.errors import DatasetError


class IdentityBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of P identities × K images, as LightMBN's random identity sampler draws them.

    At the start of an epoch each identity's images are shuffled and cut into chunks of K (the
    remainder is dropped); an identity with fewer than K images gets one chunk drawn with
    replacement. Each step draws P·world_size distinct identities among those with chunks left
    and takes one chunk of each; rank r receives identities r·P … (r+1)·P − 1 of the step, so
    ranks never share an identity within a step and together use every chunk at most once. The
    epoch ends when fewer than P·world_size identities have chunks left.

    The batch sequence is a pure function of (seed, epoch, rank, world_size, pids), so a run
    resumes exactly; the number of batches can differ by a few between epochs.

    Args:
        pids: identity of every dataset item (its position is the dataset index).
        p: identities per batch (P).
        k: images per identity in a batch (K).
        seed: base seed; each epoch draws from (seed, epoch).
        rank: this process's rank.
        world_size: number of ranks.

    Raises:
        DatasetError: fewer identities than P·world_size.
    """

    def __init__(
        self,
        pids: Sequence[int],
        p: int,
        k: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if p < 1 or k < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need p, k >= 1 and 0 <= rank < world_size, got {p, k, rank}")
        labels = np.asarray(pids)
        ids, inverse = np.unique(labels, return_inverse=True)
        if len(ids) < p * world_size:
            raise DatasetError(
                f"P×K sampling needs at least P·world_size = {p * world_size} identities, "
                f"the training set has {len(ids)}"
            )
        # Dataset indices of each identity, in the sorted order of the identities.
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(ids)))[:-1]
        self._groups = np.split(order, bounds)
        self.p, self.k, self.seed = p, k, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0
        self._cache: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to draw and how many of this rank's first batches to skip.

        Args:
            epoch: 0-based epoch index.
            start_batch: batches already consumed in this epoch (resume mid-epoch).
        """
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def _chunks(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Per identity, its shuffled images as a (n // K, K) array (one row drawn with
        replacement when it has fewer than K images)."""
        chunks = []
        for group in self._groups:
            if len(group) < self.k:
                chunks.append(rng.choice(group, size=(1, self.k), replace=True))
            else:
                shuffled = rng.permutation(group)
                chunks.append(shuffled[: len(group) // self.k * self.k].reshape(-1, self.k))
        return chunks

    def plan(self, epoch: int) -> np.ndarray:
        """Every rank's batches of an epoch.

        Returns:
            (steps, world_size, P·K) dataset indices.
        """
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        chunks = self._chunks(rng)
        left = np.array([len(c) for c in chunks])
        used = np.zeros_like(left)
        width = self.p * self.world_size
        steps = []
        while True:
            available = np.flatnonzero(left > 0)
            if len(available) < width:
                break
            chosen = rng.choice(available, size=width, replace=False)
            steps.append(np.stack([chunks[c][used[c]] for c in chosen]))  # (P·W, K)
            used[chosen] += 1
            left[chosen] -= 1
        out = np.stack(steps).reshape(len(steps), self.world_size, self.p * self.k)
        self._cache = (epoch, out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.plan(self.epoch)[self.start_batch :, self.rank]
        for batch in batches:
            yield batch.tolist()

    def __len__(self) -> int:
        """Batches this rank yields for the current epoch (after `start_batch`)."""
        return max(0, len(self.plan(self.epoch)) - self.start_batch)
