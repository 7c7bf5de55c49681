"""Market-1501 metrics: golden reference outputs, a brute-force protocol, hand-computed cases."""

import numpy as np
import pytest
import torch

import reidcli.metrics.rank as rank_module
from reidcli.errors import FeaturesError
from reidcli.metrics.distance import compute_distance, iter_distance_chunks
from reidcli.metrics.evaluate import evaluate_features
from reidcli.metrics.features import Labels, as_features, load_features, save_features
from reidcli.metrics.query_expansion import expand_queries
from reidcli.metrics.rank import evaluate_rank, score_block, top_k


def _sides(g):
    """Query and gallery labels of a golden (or features) dict."""
    return Labels(g["query_pids"], g["query_camids"]), Labels(
        g["gallery_pids"], g["gallery_camids"]
    )


@pytest.fixture(scope="module")
def golden(request):
    """The reference's inputs and outputs; of its (Q, G) distance matrix only the first 100
    query rows are kept (`distmat_head`), enough to score those queries on its exact input."""
    from tests.conftest import GOLDEN

    return dict(np.load(GOLDEN / "rank_golden.npz"))


def _check_head(dist, g):
    """Per-query AP and INP of the first rows of the reference distance matrix."""
    rows = dist.shape[0]
    query, gallery = _sides(g)
    s = score_block(dist, query[:rows], gallery)
    np.testing.assert_array_equal(s.valid, g["expected_valid_query"][:rows])
    used = int(s.valid.sum())
    np.testing.assert_allclose(s.ap[s.valid], g["expected_AP"][:used], rtol=0, atol=1e-6)
    np.testing.assert_allclose(s.inp[s.valid], g["expected_INP"][:used], rtol=0, atol=1e-6)


def _check_golden(dist, g):
    s = score_block(dist, *_sides(g))
    np.testing.assert_array_equal(s.valid, g["expected_valid_query"])
    np.testing.assert_allclose(s.ap[s.valid], g["expected_AP"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(s.inp[s.valid], g["expected_INP"], rtol=0, atol=1e-6)
    m = evaluate_rank(dist, *_sides(g))
    np.testing.assert_allclose(m["cmc"], g["expected_cmc50"], rtol=0, atol=1e-6)
    assert m["mAP"] == pytest.approx(float(g["expected_mAP"]), abs=1e-6)
    assert m["mINP"] == pytest.approx(float(g["expected_mINP"]), abs=1e-6)
    assert m["num_skipped"] == 3 and m["num_query"] == 587


@pytest.mark.parametrize("share", [0.0, 0.25])
def test_golden_on_reference_distmat(golden, share, monkeypatch):
    monkeypatch.setattr(rank_module, "CANDIDATE_SHARE", share)
    _check_head(golden["distmat_head"], golden)


def test_golden_on_our_euclidean_distances(golden):
    dist = compute_distance(golden["query_features"], golden["gallery_features"], "euclidean")
    head = golden["distmat_head"]
    np.testing.assert_allclose(dist[: head.shape[0]], head, atol=1e-5)
    _check_golden(dist, golden)


def _brute_force(dist, q_pids, q_cams, g_pids, g_cams):
    """The protocol, one query at a time, with a stable sort."""
    out = []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        hits = (g_pids[order] == q_pids[i])[keep]
        if not hits.any():
            out.append((False, np.nan, np.nan, -1))
            continue
        ranks = np.flatnonzero(hits) + 1
        ap = np.mean(np.arange(1, len(ranks) + 1) / ranks)
        out.append((True, ap, len(ranks) / ranks[-1], ranks[0] - 1))
    return [np.array(c) for c in zip(*out, strict=True)]


@pytest.mark.parametrize(
    ("levels", "shift", "dtype"),
    [(3, 0.0, np.float32), (12, 0.0, np.float32), (0, 0.0, np.float32), (4, -1.0, np.float32),
     (0, -0.5, np.float32), (3, 0.0, np.float64), (0, -0.5, np.float64)],
)  # fmt: skip
@pytest.mark.parametrize("share", [0.0, 1.0])  # every item keyed / candidates sorted
def test_matches_brute_force_with_many_ties(levels, shift, dtype, share, monkeypatch):
    monkeypatch.setattr(rank_module, "CANDIDATE_SHARE", share)
    rng = np.random.default_rng(levels)
    q, g = 40, 300
    dist = rng.random((q, g))
    if levels:  # few distinct values: ties everywhere, including between matches
        dist = np.floor(dist * levels)
    dist = (dist + shift).astype(dtype)  # negative values and -0.0 order like the floats
    if shift:
        dist[(dist == 0) & (rng.random(dist.shape) < 0.5)] = -0.0  # mixed with +0.0
    q_pids, g_pids = rng.integers(0, 15, q), rng.integers(0, 15, g)
    q_cams, g_cams = rng.integers(0, 3, q), rng.integers(0, 3, g)
    s = score_block(dist, Labels(q_pids, q_cams), Labels(g_pids, g_cams))
    valid, ap, inp, first = _brute_force(dist, q_pids, q_cams, g_pids, g_cams)
    np.testing.assert_array_equal(s.valid, valid.astype(bool))
    np.testing.assert_allclose(s.ap, ap.astype(float), atol=1e-12)
    np.testing.assert_allclose(s.inp, inp.astype(float), atol=1e-12)
    np.testing.assert_array_equal(s.first_hit, first.astype(int))


def test_hand_computed_junk_distractor_and_skip():
    # query 0: pid 1 cam 0; query 1: pid 3 cam 0 whose only match is in camera 0 → skipped
    g_pids = np.array([1, 2, 1, 0, 1, -1, 3])
    g_cams = np.array([0, 1, 1, 1, 2, 1, 0])
    dist = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.6],  # same-camera 1 removed; 0 and -1 are negatives
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.1],
        ],
        dtype=np.float32,
    )
    m = evaluate_rank(dist, Labels([1, 3], [0, 0]), Labels(g_pids, g_cams))
    # kept order for query 0: pid2, pid1 (rank 2), pid0, pid1 (rank 4), pid3, pid-1
    assert m["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert m["mINP"] == pytest.approx(2 / 4)
    assert m["rank1"] == 0.0 and m["rank5"] == 1.0
    assert m["cmc"][:3] == [0.0, 1.0, 1.0]
    assert (m["num_query"], m["num_skipped"]) == (1, 1)
    assert m["per_camera"]["0"]["num_skipped"] == 1


@pytest.mark.parametrize(("g_pids", "ap"), [([2, 1, 2], 0.5), ([1, 2, 2], 1.0), ([2, 2, 1], 1 / 3)])
def test_ties_follow_gallery_index(g_pids, ap):
    dist = np.full((1, 3), 0.5, dtype=np.float32)
    m = evaluate_rank(dist, Labels([1], [0]), Labels(g_pids, [1, 1, 1]))
    assert m["mAP"] == pytest.approx(ap)


def test_junk_pid_is_a_plain_negative():
    dist = np.array([[0.1, 0.2]], dtype=np.float32)
    m = evaluate_rank(dist, Labels([5], [0]), Labels([-1, 5], [1, 1]))
    assert m["mAP"] == pytest.approx(0.5) and m["rank1"] == 0.0


def test_distance_chunks_and_cosine():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(23, 8)).astype(np.float32), rng.normal(size=(31, 8)).astype(np.float32)
    full = compute_distance(q, g, "cosine")
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        g / np.linalg.norm(g, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(full, 1 - cos, atol=1e-6)
    chunks = np.concatenate([b for _, b in iter_distance_chunks(q, g, "euclidean", rows=5)])
    np.testing.assert_allclose(chunks, ((q[:, None] - g[None]) ** 2).sum(-1), atol=1e-4)


def test_evaluate_features_torch_inputs_and_query_expansion():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(10, 16))
    g_pids = np.repeat(np.arange(10), 4)
    q_pids = np.arange(10)
    gf = torch.tensor(centres[g_pids] + 0.3 * rng.normal(size=(40, 16)), dtype=torch.float32)
    qf = torch.tensor(centres[q_pids] + 0.3 * rng.normal(size=(10, 16)), dtype=torch.float32)
    q_cams, g_cams = torch.zeros(10, dtype=torch.int32), torch.ones(40, dtype=torch.int64)
    feats = as_features(qf, gf, torch.tensor(q_pids), torch.tensor(g_pids), q_cams, g_cams)
    m = evaluate_features(feats)
    assert set(m) >= {"rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "cmc", "num_skipped"}
    assert m["num_query"] == 10 and 0.5 < m["mAP"] <= 1.0
    as_numpy = as_features(qf.numpy(), gf.numpy(), q_pids, g_pids, np.zeros(10, np.int16), g_cams)
    assert evaluate_features(as_numpy)["mAP"] == m["mAP"]
    bf16 = as_features(qf.bfloat16(), gf.bfloat16(), q_pids, g_pids, q_cams, g_cams)
    assert bf16.query_features.dtype == np.float32
    # αQE with α = 0 and k = 1: the normalised sum of the query and its nearest gallery item
    qn = torch.nn.functional.normalize(qf, dim=1)
    gn = torch.nn.functional.normalize(gf, dim=1)
    nn = (qn @ gn.T).argmax(1)
    expected = torch.nn.functional.normalize(qn + gn[nn], dim=1)
    np.testing.assert_allclose(expand_queries(qf, gf, k=1, alpha=0.0), expected, atol=1e-6)


def test_query_expansion_brute_force():
    rng = np.random.default_rng(4)
    q, g = rng.normal(size=(7, 5)), rng.normal(size=(30, 5))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    expected = []
    for row in qn:
        sim = gn @ row
        near = np.argsort(-sim)[:3]
        total = row + sum(max(sim[j], 0.0) ** 2.5 * gn[j] for j in near)
        expected.append(total / np.linalg.norm(total))
    out = expand_queries(q, g, k=3, alpha=2.5)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.array(expected), atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_k_is_the_stable_ranking_without_removed_items(dtype):
    rng = np.random.default_rng(5)
    dist = (np.floor(rng.random((20, 60)) * 6) - 2).astype(dtype)  # ties and negatives
    dist[dist == 0] = -0.0
    query = Labels(rng.integers(0, 6, 20), rng.integers(0, 2, 20))
    gallery = Labels(rng.integers(0, 6, 60), rng.integers(0, 2, 60))
    for k in (7, 60):
        top = top_k(dist, query, gallery, k)
        for i in range(20):
            order = np.argsort(dist[i], kind="stable")
            removed = (gallery.pids[order] == query.pids[i]) & (
                gallery.camids[order] == query.camids[i]
            )
            expected = np.concatenate([order[~removed], order[removed]])[:k]
            np.testing.assert_array_equal(top[i], expected)


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "query_features": rng.normal(size=(4, 8)).astype(np.float32),
        "gallery_features": rng.normal(size=(6, 8)).astype(np.float32),
        "query_pids": np.arange(4, dtype=np.int64),
        "gallery_pids": np.arange(6, dtype=np.int64),
        "query_camids": np.zeros(4, dtype=np.int64),
        "gallery_camids": np.ones(6, dtype=np.int64),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("gallery_camids"), "missing key(s) gallery_camids"),
        (lambda a: a.update(query_pids=np.arange(3, dtype=np.int64)), "expected (4,)"),
        (lambda a: a["query_features"].__setitem__((1, 2), np.nan), "non-finite"),
        (lambda a: a.update(gallery_pids=np.arange(6, dtype=np.float64)), "must be integers"),
        (lambda a: a.update(query_camids=np.zeros(4, dtype=bool)), "must be integers"),
        (lambda a: a.update(gallery_features=np.full((6, 8), "x")), "must be real numbers"),
        (lambda a: a.update(gallery_features=np.zeros((6, 8), complex)), "must be real numbers"),
        (lambda a: a.update(gallery_features=np.full((6, 8), 1e39)), "inf) after conversion"),
        (lambda a: a.update(gallery_features=np.zeros((6, 5), np.float32)), "5-d"),
        (lambda a: a.update(gallery_features=np.zeros(6, np.float32)), "2-D array"),
    ],
)
def test_bad_features_file(tmp_path, change, message):
    arrays = _arrays()
    change(arrays)
    path = tmp_path / "f.npz"
    np.savez(path, **arrays)
    with pytest.raises(FeaturesError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_features(path)


@pytest.mark.parametrize(
    ("feature_dtype", "label_dtype"),
    [(np.float64, np.int32), (np.float16, np.uint8), (np.int16, np.uint64), (np.float32, np.int8)],
)
def test_features_of_any_real_dtype_are_accepted(tmp_path, feature_dtype, label_dtype):
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(12, 16))
    g_pids = np.repeat(np.arange(12), 5)
    arrays = {
        "query_features": 10 * (centres + 0.6 * rng.normal(size=(12, 16))),
        "gallery_features": 10 * (centres[g_pids] + 0.6 * rng.normal(size=(60, 16))),
        "query_pids": np.arange(12), "gallery_pids": g_pids,
        "query_camids": np.zeros(12, np.int64), "gallery_camids": np.ones(60, np.int64),
    }  # fmt: skip
    converted = {
        k: v.astype(feature_dtype if k.endswith("features") else label_dtype)
        for k, v in arrays.items()
    }
    np.savez(tmp_path / "f.npz", **converted)
    feats = load_features(tmp_path / "f.npz")
    assert feats.query_features.dtype == np.float32 and feats.gallery_pids.dtype == np.int64
    # the same values, held as float32 / int64 from the start, give the same metrics
    exact = {k: v.astype(np.float32 if k.endswith("features") else np.int64)
             for k, v in converted.items()}  # fmt: skip
    np.testing.assert_array_equal(feats.gallery_features, exact["gallery_features"])
    np.testing.assert_array_equal(feats.gallery_pids, g_pids)
    expected = evaluate_features(as_features(*(exact[k] for k in arrays)))
    assert evaluate_features(feats) == expected and expected["mAP"] > 0.5


def test_features_round_trip_and_unreadable_file(tmp_path):
    a = _arrays()
    path = save_features(
        tmp_path / "sub" / "f.npz", *(torch.from_numpy(a[k]) for k in a), query_paths=list("abcd")
    )
    feats = load_features(path)
    np.testing.assert_array_equal(feats.gallery_features, a["gallery_features"])
    assert list(feats.query_paths) == list("abcd") and not feats.has_paths
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(FeaturesError, match=r"not an \.npz file|not a readable"):
        load_features(tmp_path / "bad.npz")
    with pytest.raises(FeaturesError, match="not found"):
        load_features(tmp_path / "missing.npz")
