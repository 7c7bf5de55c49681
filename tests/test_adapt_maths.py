"""`reid adapt`'s maths against brute-force references: the all-pairs Jaccard distance, DBSCAN,
the automatic radius, the cluster memory's update and its InfoNCE loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reidcli.losses.cluster_memory import SOURCE, TARGET, AdaptCriterion, ClusterMemory
from reidcli.losses.criterion import build_criterion
from reidcli.metrics.clustering import (
    auto_eps,
    cluster_sizes,
    dbscan,
    jaccard_pairs,
    kth_neighbour_distance,
)
from reidcli.metrics.rerank import iter_jaccard
from reidcli.models.base import ReIDOutput
from reidcli.recipe.loss import CrossEntropy
from tests.test_rerank import dense_encoding


def blobs(ids: int, per_id: int, dim: int, spread: float, seed: int = 0):
    """Features of `ids` identities, `per_id` noisy views each, and their hidden labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    labels = np.repeat(np.arange(ids), per_id)
    x = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    order = rng.permutation(len(labels))  # crops do not arrive grouped by identity
    return x[order].astype(np.float32), labels[order]


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Hubert and Arabie's ARI by counting every pair of items (brute force)."""
    i, j = np.triu_indices(len(a), 1)
    same_a, same_b = a[i] == a[j], b[i] == b[j]
    pairs = len(i)
    both, in_a, in_b = (same_a & same_b).sum(), same_a.sum(), same_b.sum()
    expected = in_a * in_b / pairs
    return float((both - expected) / ((in_a + in_b) / 2 - expected))


def dense_dbscan(dist: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN as Ester et al. describe it, by breadth-first expansion from each core item; a
    border item joins its nearest core item's cluster (the rule reid states)."""
    n = len(dist)
    near = (dist <= eps) & ~np.eye(n, dtype=bool)
    core = near.sum(1) + 1 >= min_samples
    labels, cluster = np.full(n, -1), 0
    for start in range(n):
        if not core[start] or labels[start] >= 0:
            continue
        queue, labels[start] = [start], cluster
        while queue:
            item = queue.pop()
            for other in np.flatnonzero(near[item] & core):
                if labels[other] < 0:
                    labels[other] = cluster
                    queue.append(other)
        cluster += 1
    for item in np.flatnonzero(~core):
        candidates = np.flatnonzero(near[item] & core)
        if len(candidates):
            best = candidates[np.argmin(dist[item, candidates])]  # argmin: lowest index on ties
            labels[item] = labels[best]
    return labels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = {(int(x), int(y)) for x, y in zip(a, b, strict=True)}
    return len({x for x, _ in pairs}) == len({y for _, y in pairs}) == len(pairs)


def dense_jaccard(x: np.ndarray, k1: int, k2: int) -> np.ndarray:
    v, _ = dense_encoding(((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1), k1, k2)
    mins = np.minimum(v[:, None, :], v[None, :, :]).sum(-1)
    return 1 - mins / (2 - mins)


@pytest.mark.parametrize(("k1", "k2"), [(20, 6), (6, 1), (9, 3)])
def test_all_pairs_jaccard_matches_dense_transcription(k1, k2):
    x, _ = blobs(12, 8, 6, 0.6, seed=k1)
    expected = dense_jaccard(x, k1, k2)
    out = np.concatenate([block for _, block in iter_jaccard(x, k1=k1, k2=k2, metric="euclidean")])
    np.testing.assert_allclose(out, expected, atol=1e-5)
    pairs = jaccard_pairs(x, k1=k1, k2=k2, metric="euclidean")
    below = (expected < 1 - 1e-6) & ~np.eye(len(x), dtype=bool)
    got = np.zeros_like(below)
    got[pairs.rows, pairs.cols] = True
    assert (got == below).all()
    np.testing.assert_allclose(pairs.dists, expected[pairs.rows, pairs.cols], atol=1e-5)


@pytest.mark.parametrize(("eps", "min_samples"), [(0.5, 4), (0.7, 3), (0.3, 2), (0.85, 6)])
def test_dbscan_matches_breadth_first_reference(eps, min_samples):
    x, _ = blobs(15, 6, 8, 0.9, seed=3)
    pairs = jaccard_pairs(x, k1=10, k2=3, metric="euclidean")
    dense = np.ones((len(x), len(x)), dtype=np.float32)
    dense[pairs.rows, pairs.cols] = pairs.dists
    np.fill_diagonal(dense, 0)
    labels = dbscan(pairs, eps, min_samples)
    expected = dense_dbscan(dense, eps, min_samples)
    assert ((labels < 0) == (expected < 0)).all()
    assert same_partition(labels[labels >= 0], expected[expected >= 0])
    # numbered 0..C-1 in the order of each cluster's first item
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in range(labels.max() + 1)]
    assert firsts == sorted(firsts)


def test_auto_eps_and_clustering_recover_identities():
    x, hidden = blobs(40, 8, 16, 0.35, seed=1)
    pairs = jaccard_pairs(x, k1=20, k2=6, metric="cosine")
    dense = np.ones((len(x), len(x)), dtype=np.float64)
    dense[pairs.rows, pairs.cols] = pairs.dists
    off_diagonal = np.sort(dense[~np.eye(len(x), dtype=bool)])
    for neighbours in (6, 0.5, 2000):  # the recipe's default; fewer than one; beyond held pairs
        count = max(1, round(neighbours * len(x)))
        assert auto_eps(pairs, neighbours) == pytest.approx(off_diagonal[:count].mean(), abs=1e-6)
    np.fill_diagonal(dense, np.inf)
    kth = kth_neighbour_distance(pairs, 3)
    np.testing.assert_allclose(kth, np.sort(dense, 1)[:, 2].clip(max=1), atol=1e-6)
    labels = dbscan(pairs, auto_eps(pairs, 6), 4)
    # outliers count as crops of their own; measured 0.63, and 0.97 on the 61 % clustered
    singled = np.where(labels >= 0, labels, np.arange(len(labels)) + labels.max() + 1)
    assert adjusted_rand_index(singled, hidden) > 0.5
    clustered = labels >= 0
    assert clustered.mean() > 0.5
    assert adjusted_rand_index(labels[clustered], hidden[clustered]) > 0.9
    stats = cluster_sizes(labels)
    assert stats["clusters"] == labels.max() + 1 and stats["outliers"] == int((~clustered).sum())
    assert stats["clustered"] + stats["outliers"] == len(x)


def test_memory_loss_and_update_match_a_loop():
    torch.manual_seed(0)
    memory = ClusterMemory(8, temperature=0.05, momentum=0.2)
    start = torch.randn(5, 8)
    memory.reset(start)
    features, labels = torch.randn(7, 8), torch.tensor([0, 3, 3, 1, 0, 0, 4])
    old = F.normalize(start, dim=1)
    expected_loss = 0.0
    for f, y in zip(features, labels, strict=True):
        f = f / f.norm()
        logits = torch.stack([f @ old[c] / 0.05 for c in range(5)])
        expected_loss -= torch.log_softmax(logits, 0)[y] / len(labels)
    loss = memory(features, labels)
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    expected = old.clone()
    for c in range(5):
        rows = [F.normalize(features[i], dim=0) for i in range(7) if labels[i] == c]
        if rows:
            moved = 0.2 * old[c] + 0.8 * torch.stack(rows).mean(0)
            expected[c] = moved / moved.norm()
    torch.testing.assert_close(memory.centroids, expected, atol=1e-6, rtol=0)
    memory.eval()
    memory(features, labels)
    torch.testing.assert_close(memory.centroids, expected, atol=1e-6, rtol=0)  # no update
    # the gradient reaches the features through the old centroids
    grads = torch.randn(3, 8, requires_grad=True)
    memory.train()
    memory(grads, torch.tensor([0, 1, 2])).backward()
    assert grads.grad is not None and grads.grad.abs().sum() > 0
    # a memory of another size loads a saved one (the clusters change at every clustering)
    other = ClusterMemory(8, 0.05, 0.2)
    other.load_state_dict(memory.state_dict())
    torch.testing.assert_close(other.centroids, memory.centroids)


def test_criterion_adds_the_weighted_source_loss_on_source_rows():
    torch.manual_seed(1)
    memory = ClusterMemory(6, temperature=0.1, momentum=0.5)
    memory.reset(torch.randn(4, 6))
    source = build_criterion([CrossEntropy(label_smoothing=0.0)], num_classes=3, feat_dim=6)
    criterion = AdaptCriterion(memory, source, source_weight=0.5)
    logits, features, embedding = torch.randn(6, 3), torch.randn(6, 6), torch.randn(6, 6)
    labels = torch.tensor([[TARGET, 0], [SOURCE, 2], [TARGET, 3], [SOURCE, 0], [TARGET, 1],
                           [SOURCE, 1]])  # fmt: skip
    target = labels[:, 0] == TARGET
    check = ClusterMemory(6, 0.1, 0.5)
    check.load_state_dict(memory.state_dict())
    expected = check(embedding[target], labels[target, 1]) + 0.5 * F.cross_entropy(
        logits[~target], labels[~target, 1]
    )
    loss, parts = criterion(ReIDOutput([logits], [features], embedding), labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(parts) == {"memory", "source_cross_entropy"}
