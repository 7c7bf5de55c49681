"""IdentityBatchSampler: batch composition, replacement, epoch length, determinism, ranks."""

from collections import Counter

import numpy as np
import pytest

from reidcli.data.sampler import IdentityBatchSampler
from reidcli.errors import DatasetError


def make_pids(seed=0, ids=40, low=1, high=20):
    """Shuffled identity labels; some identities have fewer images than K."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(ids) * 7 + 3, rng.integers(low, high, ids)))


def batches(sampler, epoch=0, start_batch=0):
    sampler.set_epoch(epoch, start_batch)
    return list(sampler)


@pytest.mark.parametrize(("p", "k"), [(4, 4), (6, 8), (2, 3)])
def test_every_batch_is_p_identities_times_k_images(p, k):
    pids = make_pids()
    sampler = IdentityBatchSampler(pids, p, k, seed=1)
    out = batches(sampler)
    assert len(out) == len(sampler) > 0
    for batch in out:
        assert len(batch) == p * k
        ids = pids[batch].reshape(p, k)
        assert len(set(ids[:, 0])) == p and (ids == ids[:, :1]).all()


def test_small_identities_are_drawn_with_replacement_and_large_ones_without():
    pids = np.array([0, 0] + [1] * 9 + [2] * 4 + [3] * 5 + [4] * 12)
    sampler = IdentityBatchSampler(pids, 2, 4, seed=0)
    seen = Counter()
    for epoch in range(20):
        uses = Counter()
        for batch in batches(sampler, epoch):
            for chunk in np.reshape(batch, (2, 4)):
                if pids[chunk[0]] == 0:
                    assert set(chunk) <= {0, 1}  # only identity 0's two images, repeated
                else:
                    uses.update(chunk.tolist())
                seen[pids[chunk[0]]] += 1
        # Within an epoch no image of an identity with >= K images is used twice.
        assert max(uses.values()) == 1
    assert seen[0] > 0


def test_epoch_ends_when_fewer_than_p_identities_have_chunks_left():
    pids = make_pids(seed=2)
    p, k = 5, 4
    counts = Counter(pids.tolist())
    chunks = {pid: max(1, n // k) for pid, n in counts.items()}
    for epoch in range(5):
        out = batches(IdentityBatchSampler(pids, p, k, seed=3), epoch)
        taken = Counter()
        for batch in out:
            taken.update(pids[np.asarray(batch)[::k]].tolist())
        left = [pid for pid in chunks if chunks[pid] - taken[pid] > 0]
        assert all(taken[pid] <= chunks[pid] for pid in chunks)
        assert len(left) < p
        assert len(out) * p == sum(chunks.values()) - sum(chunks[q] - taken[q] for q in left)


def test_the_sequence_is_a_function_of_seed_and_epoch():
    pids = make_pids()
    a = IdentityBatchSampler(pids, 4, 4, seed=5)
    b = IdentityBatchSampler(pids, 4, 4, seed=5)
    assert batches(a, 3) == batches(b, 3)
    assert batches(a, 3) != batches(a, 4)
    assert batches(a, 3) != batches(IdentityBatchSampler(pids, 4, 4, seed=6), 3)
    # Iterating does not advance any hidden state.
    assert batches(a, 3) == batches(a, 3)


def test_start_batch_skips_the_first_batches_of_the_epoch():
    sampler = IdentityBatchSampler(make_pids(), 4, 4, seed=0)
    full = batches(sampler, 2)
    assert batches(sampler, 2, start_batch=3) == full[3:]
    assert len(sampler) == len(full) - 3
    sampler.set_epoch(2)
    assert len(sampler) == len(full)


def test_two_ranks_get_disjoint_identities_and_cover_the_epoch_once():
    pids = make_pids(seed=4, low=4)
    ranks = [IdentityBatchSampler(pids, 3, 4, seed=7, rank=r, world_size=2) for r in range(2)]
    out = [batches(s, 1) for s in ranks]
    assert len(out[0]) == len(out[1]) == len(ranks[0]) == len(ranks[1]) > 0
    for b0, b1 in zip(*out, strict=True):
        assert not set(pids[b0]) & set(pids[b1])
    used = Counter(i for rank in out for batch in rank for i in batch)
    assert max(used.values()) == 1  # every identity has >= K images: no index twice
    # Fewer than P·world_size identities have a full chunk left unused.
    left = {
        pid
        for pid, n in Counter(pids.tolist()).items()
        if (n - sum(used[i] for i in np.flatnonzero(pids == pid))) >= 4
    }
    assert len(left) < 6


def test_too_few_identities_is_a_dataset_error():
    with pytest.raises(DatasetError, match="at least"):
        IdentityBatchSampler([0, 0, 1, 1], 2, 2, world_size=2)
