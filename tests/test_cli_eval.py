"""`reid eval --features` and `reid rerank`, driven end to end as subprocesses."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidcli.metrics.evaluate import PUBLIC_KEYS
from reidcli.metrics.features import REQUIRED_KEYS
from tests.conftest import reid

ROOT = Path(__file__).resolve().parents[1]
FEATURE_KEYS = REQUIRED_KEYS
PUBLIC = set(PUBLIC_KEYS)


@pytest.fixture(scope="module")
def golden(rerank_golden):
    return rerank_golden


@pytest.fixture
def features_file(tmp_path, golden):
    path = tmp_path / "feats.npz"
    np.savez(path, **{k: golden[k] for k in FEATURE_KEYS})
    return path


def test_eval_rerank_json_matches_reference(features_file, golden):
    out = reid("eval", "--features", str(features_file), "--rerank", "--distance", "euclidean",
               "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == PUBLIC | {"reranked"} and set(doc["reranked"]) == PUBLIC
    assert doc["mAP"] == pytest.approx(float(golden["expected_mAP_before"]), abs=1e-6)
    assert doc["reranked"]["mAP"] == pytest.approx(float(golden["expected_mAP_after"]), abs=1e-6)
    assert "re-ranked" in out.stderr and "queries skipped" in out.stderr


def test_rerank_writes_distances(features_file, golden, tmp_path):
    dist = tmp_path / "rr.npy"
    out = reid("rerank", str(features_file), "--distance", "euclidean", "--out", str(dist),
               "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["reranked"]["mAP"] > json.loads(out.stdout)["mAP"]
    np.testing.assert_allclose(np.load(dist), golden["expected_reranked"], atol=1e-5)


def test_eval_without_a_run_or_features_says_so(tmp_path):
    out = reid("eval", cwd=tmp_path)
    assert out.returncode == 1
    assert "no run found under runs/" in out.stderr and "Traceback" not in out.stderr


def test_eval_run_and_features_together_is_a_usage_error(tmp_path, features_file):
    out = reid("eval", str(tmp_path), "--features", str(features_file), cwd=tmp_path)
    assert out.returncode == 2
    assert "not both" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("problem", ["missing", "nan", "length", "dtype", "absent"])
def test_bad_features_exit_1(tmp_path, problem):
    rng = np.random.default_rng(0)
    arrays = {
        "query_features": rng.normal(size=(3, 4)).astype(np.float32),
        "gallery_features": rng.normal(size=(5, 4)).astype(np.float32),
        "query_pids": np.arange(3), "gallery_pids": np.arange(5),
        "query_camids": np.zeros(3, np.int64), "gallery_camids": np.ones(5, np.int64),
    }  # fmt: skip
    if problem == "missing":
        del arrays["query_pids"]
    elif problem == "nan":
        arrays["gallery_features"][2, 1] = np.nan
    elif problem == "length":
        arrays["gallery_camids"] = np.ones(4, np.int64)
    elif problem == "dtype":
        arrays["query_pids"] = arrays["query_pids"].astype(np.float64)  # labels must be integers
    path = tmp_path / "bad.npz"
    if problem != "absent":
        np.savez(path, **arrays)
    out = reid("eval", "--features", str(path))
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr


def test_visualize_writes_pngs(tmp_path):
    rng = np.random.default_rng(0)
    g_pids = np.repeat(np.arange(6), 3)
    centres = rng.normal(size=(6, 8))
    paths = []
    for i in range(6 + 18):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (16, 32), (10 * i, 0, 0)).save(p)
        paths.append(str(p))
    arrays = {
        "query_features": (centres + 0.8 * rng.normal(size=(6, 8))).astype(np.float32),
        "gallery_features": (centres[g_pids] + 0.8 * rng.normal(size=(18, 8))).astype(np.float32),
        "query_pids": np.arange(6), "gallery_pids": g_pids,
        "query_camids": np.zeros(6, np.int64), "gallery_camids": np.ones(18, np.int64),
        "query_paths": np.array(paths[:6]), "gallery_paths": np.array(paths[6:]),
    }  # fmt: skip
    feats = tmp_path / "f.npz"
    np.savez(feats, **arrays)
    vis = tmp_path / "vis"
    out = reid("eval", "--features", str(feats), "--visualize", "2", "--vis-dir", str(vis),
               "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert {p.name for p in vis.iterdir()} == {"worst.png", "best.png", "cmc.png"}
    with Image.open(vis / "worst.png") as img:
        assert img.height > 2 * 128  # two ranked lists
    del arrays["query_paths"]
    np.savez(feats, **arrays)
    out = reid("eval", "--features", str(feats), "--visualize", "2")
    assert out.returncode == 1 and "query_paths" in out.stderr


def test_rerank_and_eval_agree_under_the_cuhk03_protocol_for_any_seed(features_file):
    """The seed of the CUHK03 gallery draws has one home, `eval.seed`, for both commands."""
    protocol = ["--set", "eval.protocol=cuhk03", "--distance", "euclidean", "--json"]

    def reranked_rank1(*command: str) -> float:
        done = reid(*command, *protocol)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["reranked"]["rank1"]

    by_seed = {}
    for seed in (0, 5):
        chosen = ["--set", f"eval.seed={seed}"]
        rerank = reranked_rank1("rerank", str(features_file), *chosen)
        evaluate = reranked_rank1("eval", "--features", str(features_file), "--rerank", *chosen)
        assert rerank == evaluate, seed
        by_seed[seed] = rerank
    assert by_seed[0] != by_seed[5]  # the draws depend on the seed, so agreeing means something
