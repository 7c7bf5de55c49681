"""CUHK03 classic single-gallery-shot CMC against independent references on multi-shot galleries.

Two references: a per-query brute force fed the same uniform draws ((REPEATS, G) per query, in
query order, as documented), and the exact expected curve of the protocol (the
kept true match is uniform over the allowed ones; each other identity's kept item precedes it
with a known probability, so its rank is Poisson-binomial), compared with the mean over many
seeds.
"""

import numpy as np
import pytest

import reidcli.metrics.cuhk03 as cuhk03
import reidcli.metrics.distance as distance
from reidcli.metrics.cuhk03 import REPEATS, single_shot_cmc
from reidcli.metrics.distance import compute_distance
from reidcli.metrics.evaluate import evaluate_features
from reidcli.metrics.features import Labels, as_features
from reidcli.metrics.rank import evaluate_rank
from reidcli.recipe.run import Eval


def _problem(seed: int, levels: int = 0):
    """25 queries; a gallery of 24 identities (pid 0: distractors) with 2–8 images each over 2
    cameras, so most identities have several images in the same camera."""
    rng = np.random.default_rng(seed)
    g_pids = np.repeat(np.arange(24), rng.integers(2, 9, 24))
    g_cams = rng.integers(0, 2, g_pids.size)
    q_pids, q_cams = rng.integers(1, 24, 25), rng.integers(0, 2, 25)
    dist = rng.random((25, g_pids.size)) - 0.3 * (q_pids[:, None] == g_pids)  # weakly informative
    if levels:  # ties everywhere, negative values and -0.0 (equal to +0.0)
        dist = np.floor(dist * levels) - levels // 2 + 1
        dist[dist == 0] = -0.0
    return dist.astype(np.float32), Labels(q_pids, q_cams), Labels(g_pids, g_cams)


def _has_match(query, gallery) -> np.ndarray:
    """(Q,) whether a query keeps a true match from another camera (else it is skipped)."""
    return np.array([((gallery.pids == p) & (gallery.camids != c)).any()
                     for p, c in zip(query.pids, query.camids, strict=True)])  # fmt: skip


def _brute_force(dist, query, gallery, rng, max_rank):
    """The protocol one query and one repeat at a time, with the documented draw order."""
    num_q, num_g = dist.shape
    draws = [rng.random((REPEATS, num_g)) for _ in range(num_q)]
    cmc = np.zeros((num_q, max_rank))
    for i in range(num_q):
        allowed = [
            j for j in range(num_g)
            if not (gallery.pids[j] == query.pids[i] and gallery.camids[j] == query.camids[i])
        ]  # fmt: skip
        for t in range(REPEATS):
            kept = {}  # identity -> its allowed item with the largest draw
            for j in allowed:
                pid = int(gallery.pids[j])
                if pid not in kept or draws[i][t, j] > draws[i][t, kept[pid]]:
                    kept[pid] = j
            if int(query.pids[i]) not in kept:
                continue
            ranked = sorted(kept.values(), key=lambda j: (float(dist[i, j]), j))  # stable order
            rank = [int(gallery.pids[j]) for j in ranked].index(int(query.pids[i]))
            cmc[i, rank:] += 1
    return cmc / REPEATS


@pytest.mark.parametrize("levels", [0, 4])
@pytest.mark.parametrize("block_rows", [None, 7])  # one block; blocks of 7 queries
def test_equals_brute_force_draw_for_draw(levels, block_rows, monkeypatch):
    dist, query, gallery = _problem(1 + levels, levels)
    if block_rows:
        monkeypatch.setattr(cuhk03, "WORK_ELEMENTS", block_rows * REPEATS * dist.shape[1])
    curves = single_shot_cmc(dist, query, gallery, np.random.default_rng(5), max_rank=20)
    expected = _brute_force(dist, query, gallery, np.random.default_rng(5), 20)
    np.testing.assert_array_equal(curves, expected)
    assert 0.05 < curves[:, 0].mean() < 0.95  # neither trivial nor hopeless


def _expected_cmc(dist, query, gallery, max_rank, same_camera_removed=True):
    """(max_rank,) exact expected single-shot CMC over the queries that keep a true match."""
    curves = []
    for i in range(len(dist)):
        allowed = np.ones(dist.shape[1], dtype=bool)
        if same_camera_removed:
            allowed = ~((gallery.pids == query.pids[i]) & (gallery.camids == query.camids[i]))
        matches = np.flatnonzero(allowed & (gallery.pids == query.pids[i]))
        if matches.size == 0:
            continue
        curve = np.zeros(max_rank)
        for m in matches:
            ahead = (dist[i] < dist[i, m]) | (
                (dist[i] == dist[i, m]) & (np.arange(len(allowed)) < m)
            )
            rank_prob = np.array([1.0])  # distribution of the number of kept items ahead
            for pid in np.unique(gallery.pids[allowed]):
                if pid == query.pids[i]:
                    continue
                items = allowed & (gallery.pids == pid)
                p = (items & ahead).sum() / items.sum()
                rank_prob = np.append(rank_prob * (1 - p), 0.0) + np.append(0.0, rank_prob * p)
            within = np.cumsum(np.pad(rank_prob, (0, max_rank)))[:max_rank]
            curve += within / matches.size
        curves.append(curve)
    return np.mean(curves, axis=0)


def test_mean_over_seeds_matches_the_exact_expectation():
    dist, query, gallery = _problem(11)
    expected = _expected_cmc(dist, query, gallery, 20)
    # the reference without same-camera removal differs far beyond the tolerance below
    assert np.abs(_expected_cmc(dist, query, gallery, 20, False) - expected).max() > 0.05
    valid = evaluate_rank(dist, query, gallery)["num_query"]
    runs = [
        single_shot_cmc(dist, query, gallery, np.random.default_rng(seed), 20) for seed in range(60)
    ]
    keep = _has_match(query, gallery)
    assert keep.sum() == valid
    mean = np.mean([r[keep].mean(0) for r in runs], axis=0)
    # 60 seeds × 10 repeats × ~24 queries: the standard error is below 0.004 at every rank
    np.testing.assert_allclose(mean, expected, atol=0.015)
    assert 0.2 < expected[0] < 0.8


@pytest.mark.parametrize("block_rows", [None, 6])  # distances in one block; in blocks of 6
def test_evaluate_features_cuhk03_uses_the_same_curves(block_rows, monkeypatch):
    rng = np.random.default_rng(2)
    _, query, gallery = _problem(3)
    if block_rows:
        monkeypatch.setattr(distance, "BLOCK_ELEMENTS", block_rows * len(gallery))
    centres = rng.normal(size=(24, 8))
    qf = centres[query.pids] + 0.9 * rng.normal(size=(25, 8))
    gf = centres[gallery.pids] + 0.9 * rng.normal(size=(len(gallery), 8))
    feats = as_features(qf, gf, query.pids, gallery.pids, query.camids, gallery.camids)
    m = evaluate_features(feats, Eval(protocol="cuhk03", distance="euclidean", seed=4))
    dist = compute_distance(feats.query_features, feats.gallery_features, "euclidean")
    curves = _brute_force(dist, query, gallery, np.random.default_rng(4), 50)
    valid = _has_match(query, gallery)
    np.testing.assert_allclose(m["cmc"], curves[valid].mean(0), atol=1e-12)
    assert m["rank1"] == pytest.approx(curves[valid, 0].mean(), abs=1e-12)
    market = evaluate_features(feats, Eval(distance="euclidean"))
    assert m["mAP"] == market["mAP"] and m["protocol"] == "cuhk03"


def test_equals_market_when_gallery_is_single_shot():
    rng = np.random.default_rng(3)
    gallery = Labels(np.arange(40), np.ones(40, dtype=np.int64))
    query = Labels(rng.integers(0, 40, 25), np.zeros(25, dtype=np.int64))
    dist = rng.random((25, 40)).astype(np.float32)
    curves = single_shot_cmc(dist, query, gallery, rng, max_rank=40)
    market = evaluate_rank(dist, query, gallery)
    np.testing.assert_allclose(curves.mean(0), market["cmc"], atol=1e-12)
