"""k-reciprocal re-ranking: golden reference matrix, a dense transcription of SPEC §3, chunking."""

import numpy as np
import pytest

import reidcli.metrics.neighbours as neighbours
import reidcli.metrics.rerank as rr
from reidcli.metrics.evaluate import evaluate_features
from reidcli.metrics.features import Labels, as_features
from reidcli.metrics.rank import evaluate_rank
from reidcli.recipe.run import Eval, QueryExpansion, Rerank

# the schema's defaults (k1=20, k2=6, λ=0.3): the only place they are written down
DEFAULTS = Rerank().model_dump(exclude={"enabled"})


@pytest.fixture(scope="module")
def golden(rerank_golden):
    return rerank_golden


def _dense_reference(dist_sq, q, k1, k2, lam):
    """SPEC §3 step by step on a dense (N, N) squared-distance matrix, one item at a time."""
    v, d = dense_encoding(dist_sq, k1, k2)
    mins = np.minimum(v[:q, None, :], v[None, q:, :]).sum(-1)  # (Q, G)
    jaccard = 1 - mins / (2 - mins)
    return (1 - lam) * jaccard + lam * d[:q, q:]


def dense_encoding(dist_sq, k1, k2):
    """SPEC §3's encodings V (N, N) and the row-normalised distances d, one item at a time."""
    n = dist_sq.shape[0]
    d = (dist_sq / dist_sq.max(1, keepdims=True)).astype(np.float32)
    rank = np.argsort(d, axis=1, kind="stable")

    def recip(i, k):
        fwd = rank[i, : k + 1]
        return {int(c) for c in fwd if i in rank[c, : k + 1]}

    half = int(np.around(k1 / 2.0))
    v = np.zeros((n, n), np.float32)
    for i in range(n):
        r = recip(i, k1)
        expanded = set(r)
        for c in r:
            rc = recip(c, half)
            if len(rc & r) > 2.0 / 3.0 * len(rc):
                expanded |= rc
        idx = np.array(sorted(expanded))
        w = np.exp(-d[i, idx])
        v[i, idx] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    return v, d


def test_golden_from_features(golden):
    out = rr.rerank(
        golden["query_features"], golden["gallery_features"], metric="euclidean", **DEFAULTS
    )
    assert out.shape == (300, 1500) and out.dtype == np.float32
    np.testing.assert_allclose(out, golden["expected_reranked"], rtol=0, atol=1e-5)


def test_golden_from_reference_distances(golden):
    dists = (golden[k] for k in ("q_g_dist", "q_q_dist", "g_g_dist"))
    out = rr.rerank_distances(*dists, **DEFAULTS)
    np.testing.assert_allclose(out, golden["expected_reranked"], rtol=0, atol=1e-5)


def test_golden_metrics_after_reranking(golden):
    keys = ("query_features", "gallery_features", "query_pids", "gallery_pids", "query_camids")
    feats = as_features(*(golden[k] for k in keys), golden["gallery_camids"])
    m = evaluate_features(feats, Eval(distance="euclidean", rerank=Rerank(enabled=True)))
    assert m["mAP"] == pytest.approx(float(golden["expected_mAP_before"]), abs=1e-6)
    assert m["reranked"]["mAP"] == pytest.approx(float(golden["expected_mAP_after"]), abs=1e-6)
    np.testing.assert_allclose(m["reranked"]["cmc"], golden["expected_cmc50_after"], atol=1e-6)


@pytest.mark.parametrize(("k1", "k2", "lam"), [(20, 6, 0.3), (5, 1, 0.0), (7, 3, 1.0), (3, 2, 0.5)])
def test_matches_dense_transcription(k1, k2, lam):
    rng = np.random.default_rng(k1)
    centres = rng.normal(size=(12, 6))
    x = (centres[rng.integers(0, 12, 90)] + 0.5 * rng.normal(size=(90, 6))).astype(np.float32)
    q = 20
    dist_sq = ((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1)
    expected = _dense_reference(dist_sq, q, k1, k2, lam)
    out = rr.rerank(x[:q], x[q:], k1=k1, k2=k2, lambda_=lam, metric="euclidean")
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("keep", [True, False])
def test_chunked_equals_whole_and_cosine_equals_euclidean_on_unit_vectors(
    monkeypatch, golden, keep
):
    # keep: the final blocks reuse the query-to-gallery products of the neighbour pass
    qf, gf = golden["query_features"][:80], golden["gallery_features"][:400]
    qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    whole = rr.rerank(qf, gf, metric="euclidean", **DEFAULTS)
    if not keep:
        monkeypatch.setattr(rr, "KEEP_ELEMENTS", 0)
    monkeypatch.setattr(neighbours, "BLOCK_ELEMENTS", 3000)
    monkeypatch.setattr(neighbours, "MIN_BLOCK_ROWS", 1)
    monkeypatch.setattr(rr, "FINAL_ELEMENTS", 2000)
    monkeypatch.setattr(rr, "PAIR_BUDGET", 500)
    monkeypatch.setattr(rr, "PAIR_ROWS", 77)
    monkeypatch.setattr(rr, "EXPAND_ELEMENTS", 5000)
    starts = [s for s, _ in rr.iter_rerank(qf, gf, metric="euclidean", **DEFAULTS)]
    assert len(starts) > 5 and starts == sorted(starts)
    np.testing.assert_allclose(rr.rerank(qf, gf, metric="euclidean", **DEFAULTS), whole, atol=1e-6)
    np.testing.assert_allclose(rr.rerank(qf, gf, metric="cosine", **DEFAULTS), whole, atol=1e-5)


class _Matrix:
    """A precomputed distance matrix as a block source."""

    def __init__(self, d):
        self.d, self.n = d, d.shape[0]

    def block(self, start, stop, col_start=0):
        return self.d[start:stop, col_start:].copy()


@pytest.mark.parametrize("levels", [0, 3])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block_elements", [1 << 22, 7 * 50])  # one block; blocks of 7 rows
def test_nearest_is_the_stable_order(levels, symmetric, block_elements, monkeypatch):
    monkeypatch.setattr(neighbours, "BLOCK_ELEMENTS", block_elements)
    monkeypatch.setattr(neighbours, "MIN_BLOCK_ROWS", 1)
    rng = np.random.default_rng(levels)
    d = rng.random((50, 50)).astype(np.float32)
    if levels:  # many ties, also at the k-th value
        d = np.floor(d * levels).astype(np.float32)
    if symmetric:
        d = np.minimum(d, d.T)
    np.fill_diagonal(d, 0.0)
    for k in (1, 9, 50):
        knn, row_max = neighbours.nearest(_Matrix(d), k, symmetric)
        np.testing.assert_array_equal(knn, np.argsort(d, axis=1, kind="stable")[:, :k])
        np.testing.assert_array_equal(row_max, d.max(1))


def test_bad_parameters():
    x = np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match="must not exceed"):
        rr.rerank(x[:2], x[2:], k1=20, k2=6, lambda_=0.3, metric="euclidean")
    with pytest.raises(ValueError, match="lambda"):
        rr.rerank(x[:2], x[2:], k1=2, k2=1, lambda_=1.5, metric="euclidean")
    with pytest.raises(ValueError, match="unknown distance"):
        rr.rerank(x[:2], x[2:], k1=2, k2=1, lambda_=0.5, metric="manhattan")


def test_evaluate_features_takes_recipe_sections():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(10, 8))
    g_pids = np.repeat(np.arange(10), 5)
    gf = (centres[g_pids] + 0.7 * rng.normal(size=(50, 8))).astype(np.float32)
    qf = (centres + 0.7 * rng.normal(size=(10, 8))).astype(np.float32)
    feats = as_features(
        qf, gf, np.arange(10), g_pids, np.zeros(10, np.int64), np.ones(50, np.int64)
    )
    off = evaluate_features(feats, Eval(rerank=Rerank(), query_expansion=QueryExpansion()))
    assert "reranked" not in off and "query_expansion" not in off
    assert off == evaluate_features(feats)  # None: the schema's defaults
    on = evaluate_features(feats, Eval(rerank=Rerank(enabled=True, k1=6, k2=2, **{"lambda": 0.5})))
    assert on["reranked"]["params"] == {"k1": 6, "k2": 2, "lambda": 0.5}
    direct = rr.rerank(qf, gf, k1=6, k2=2, lambda_=0.5, metric="cosine")
    expected = evaluate_rank(direct, feats.query, Labels(g_pids, np.ones(50)))
    assert on["reranked"]["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    qe = evaluate_features(
        feats, Eval(query_expansion=QueryExpansion(enabled=True, k=2, alpha=1.0))
    )
    assert qe["query_expansion"] == {"k": 2, "alpha": 1.0}
