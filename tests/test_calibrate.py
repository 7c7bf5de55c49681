"""`reid calibrate`, thresholds kept with runs, exports and indexes, `reid search --threshold`
and `reid eval --open-set`: the maths against brute force, a calibration checked on fresh data,
and the refusals."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from reidcli import api
from reidcli.errors import CalibrationError, FeaturesError, GalleryIndexError
from reidcli.export.metadata import file_sha256
from reidcli.metrics import calibration as cal
from reidcli.metrics.features import Features
from reidcli.metrics.open_set import evaluate_open_set, withheld_identities
from reidcli.results import OpenSetResult
from tests.conftest import reid
from tests.test_export import make_checkpoint, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def people(ids: int, per: int, seed: int, dim: int = 32, spread: float = 0.6, cams: int = 3):
    """Crops of `ids` people, `per` each over `cams` cameras: a random centre per person plus
    Gaussian noise, so that same-person distances are small and others large."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    pids = np.repeat(np.arange(1, ids + 1), per)
    feats = centres[pids - 1] + spread * rng.normal(size=(len(pids), dim))
    camids = np.tile(np.arange(per) % cams, ids)
    return feats.astype(np.float32), pids, camids


def two_sided(ids: int, per: int, seed: int, **kwargs) -> Features:
    """The first crop of each person a query, the others the gallery."""
    feats, pids, camids = people(ids, per, seed, **kwargs)
    q = np.arange(len(pids)) % per == 0
    return Features(feats[q], feats[~q], pids[q], pids[~q], camids[q], camids[~q])


def save_two_sided(path: Path, feats: Features, **extra) -> Path:
    np.savez(path, query_features=feats.query_features, gallery_features=feats.gallery_features,
             query_pids=feats.query_pids, gallery_pids=feats.gallery_pids,
             query_camids=feats.query_camids, gallery_camids=feats.gallery_camids,
             gallery_paths=np.asarray([f"g{i}.jpg" for i in range(len(feats.gallery_pids))]),
             query_paths=np.asarray([f"q{i}.jpg" for i in range(len(feats.query_pids))]),
             **extra)  # fmt: skip
    return path


def brute_pairs(feats: Features):
    """Every query x gallery distance (cosine, float64), split into positives and negatives."""
    q = feats.query_features / np.linalg.norm(feats.query_features, axis=1, keepdims=True)
    g = feats.gallery_features / np.linalg.norm(feats.gallery_features, axis=1, keepdims=True)
    dist = 1.0 - q.astype(np.float64) @ g.astype(np.float64).T
    same = feats.query_pids[:, None] == feats.gallery_pids[None, :]
    other_cam = feats.query_camids[:, None] != feats.gallery_camids[None, :]
    return np.sort(dist[same & other_cam]), np.sort(dist[~same])


def pairs_of(feats: Features, **kwargs) -> cal.Pairs:
    first, second = cal.sides(
        feats.query_features, feats.query_pids, feats.query_camids,
        (feats.gallery_features, feats.gallery_pids, feats.gallery_camids),
    )  # fmt: skip
    return cal.collect_pairs(first, second, "cosine", **kwargs)


def test_thresholds_and_rates_match_brute_force(monkeypatch):
    feats = two_sided(40, 5, seed=3)
    positives, negatives = brute_pairs(feats)
    # small blocks and a small kept set: the block-by-block top-K path, not one matrix
    monkeypatch.setattr(cal, "KEEP_MIN", 50)
    pairs = pairs_of(feats, max_far=0.05, block_elements=64)
    assert pairs.num_negatives == len(negatives) and len(pairs.positives) == len(positives)
    kept = len(pairs.negatives)
    assert 50 <= kept < len(negatives)
    np.testing.assert_allclose(pairs.negatives, negatives[:kept], atol=1e-5)
    np.testing.assert_allclose(pairs.positives, positives, atol=1e-5)
    for level in cal.calibrate_levels(pairs, [0.05, 0.01], replicates=50):
        expected = negatives[math.floor(level.far * len(negatives))]
        assert level.threshold == pytest.approx(expected, abs=1e-5)
        # the rule: at most far * N negatives strictly below the threshold
        assert (negatives < level.threshold - 1e-5).sum() <= level.far * len(negatives)
        assert level.tar == pytest.approx((positives < level.threshold).mean(), abs=1.5 / 160)
        assert level.threshold_ci[0] <= level.threshold <= level.threshold_ci[1]


def test_bootstrap_weights_equal_the_resampled_data():
    """A replicate's thresholds from weights equal those of the data where each identity is
    copied as often as it was drawn (brute force; pairs between copies of one person left out)."""
    feats = two_sided(8, 4, seed=5)
    pairs = pairs_of(feats, max_far=0.1)
    draws = np.asarray([0, 2, 1, 0, 3, 1, 0, 1], np.float64)  # identity index = pid - 1
    q_rows, g_rows = [], []
    for person, times in enumerate(draws.astype(int)):
        for copy in range(times):
            q_rows += [(i, person, copy) for i in np.flatnonzero(feats.query_pids == person + 1)]
            g_rows += [(i, person, copy) for i in np.flatnonzero(feats.gallery_pids == person + 1)]
    q = feats.query_features / np.linalg.norm(feats.query_features, axis=1, keepdims=True)
    g = feats.gallery_features / np.linalg.norm(feats.gallery_features, axis=1, keepdims=True)
    negatives, positives = [], []
    for qi, qp, qc in q_rows:
        for gi, gp, gc in g_rows:
            d = 1.0 - float(q[qi] @ g[gi])
            if qp != gp:
                negatives.append(d)
            elif qc == gc and feats.query_camids[qi] != feats.gallery_camids[gi]:
                positives.append(d)
    negatives, positives = np.sort(negatives), np.asarray(positives)
    thresholds, tars = cal.replicate(pairs, draws, [0.1, 0.05])
    for far, t, tar in zip([0.1, 0.05], thresholds, tars, strict=True):
        expected = negatives[math.floor(far * len(negatives) + 1e-9)]
        assert t == pytest.approx(expected, abs=1e-5)
        assert tar == pytest.approx((positives < t).mean(), abs=1e-9)


def test_far_on_fresh_people_is_within_the_stated_interval():
    calibration = pairs_of(two_sided(300, 6, seed=0), max_far=0.01)
    levels = cal.calibrate_levels(calibration, [0.01, 0.001], replicates=200)
    thresholds = [level.threshold for level in levels]
    fresh = pairs_of(two_sided(2000, 6, seed=1), below=max(thresholds))
    for level in levels:
        measured = fresh.far_at(level.threshold)
        assert level.far_ci[0] <= measured <= level.far_ci[1], (level, measured)
        # an interval that says something: within a factor 2 of the FAR asked for
        assert level.far / 2 < level.far_ci[0] < level.far < level.far_ci[1] < 2 * level.far
        assert 0 < level.tar_ci[0] <= level.tar <= level.tar_ci[1] <= 1


def test_one_sided_file_uses_every_pair_of_rows(tmp_path, capsys):
    feats, pids, camids = people(30, 4, seed=2)
    path = tmp_path / "one.npz"
    np.savez(path, features=feats, pids=pids, camids=camids)
    code, out, err = run_cli(capsys, "calibrate", str(path), "--far", "0.01", "--json",
                             "--no-plot", "--bootstrap", "50")  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    n = len(pids)
    same = pids[:, None] == pids[None, :]
    upper = np.triu(np.ones((n, n), bool), 1)
    assert doc["pairs"]["negative"] == int((~same & upper).sum())
    cross = same & upper & (camids[:, None] != camids[None, :])
    assert doc["pairs"]["positive"] == int(cross.sum())
    assert doc["out"] == str(tmp_path / "one.calibration.json") and "figure" not in doc
    text = (tmp_path / "one.calibration.json").read_text()

    def not_json(constant):  # NaN or Infinity: not strict JSON
        raise AssertionError(constant)

    curve = json.loads(text, parse_constant=not_json)["curve"]
    assert curve["far"] == sorted(curve["far"]) and curve["tar"] == sorted(curve["tar"])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"pids": None}, "no person ids"),
        ({"pids": "one"}, "one identity only"),
        ({"camids": "one"}, "no identity is seen by two cameras"),
        ({"pids": "unknown"}, "no row has a person id"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys, arrays, message):
    feats, pids, camids = people(20, 4, seed=0)
    values = {"features": feats, "pids": pids, "camids": camids}
    for key, kind in arrays.items():
        if kind is None:
            values.pop(key)
        else:
            values[key] = {"one": np.ones_like(pids), "unknown": -np.ones_like(pids)}[kind]
    path = tmp_path / "bad.npz"
    np.savez(path, **values)
    code, _, err = run_cli(capsys, "calibrate", str(path))
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad.calibration.json").exists()


def test_far_below_what_the_pairs_measure_names_the_smallest(tmp_path, capsys):
    path = save_two_sided(tmp_path / "f.npz", two_sided(30, 4, seed=0))  # 30 x 87 negatives
    code, _, err = run_cli(capsys, "calibrate", str(path), "--far", "0.01,0.0001")
    negatives = 30 * 90 - 30 * 3
    assert code == 1 and "FAR 0.0001 cannot be measured" in err
    assert f"smallest measurable FAR is {10 / negatives:.3g}" in err
    assert not (tmp_path / "f.calibration.json").exists()
    code, _, err = run_cli(capsys, "calibrate", str(path), "--far", "0.5")
    assert code == 2 and "(0, 0.1]" in err


@pytest.fixture(scope="module")
def gallery_files(tmp_path_factory) -> dict:
    """Features of model A (calibration and test splits), and a calibration made with them."""
    base = tmp_path_factory.mktemp("calibrated")
    model_a, model_b = "a" * 64, "b" * 64
    calib = save_two_sided(base / "val.npz", two_sided(150, 5, seed=10), model_sha256=model_a)
    test = save_two_sided(base / "test.npz", two_sided(120, 5, seed=11), model_sha256=model_a)
    other = save_two_sided(base / "other.npz", two_sided(120, 5, seed=11), model_sha256=model_b)
    narrow = save_two_sided(base / "narrow.npz", two_sided(120, 5, seed=11, dim=16))
    result = api.calibrate(calib, far=(0.01, 0.001), bootstrap=50)
    assert result.calibration.model_sha256 == model_a
    return {"calibration": Path(result.out), "test": test, "other": other, "narrow": narrow,
            "base": base, "result": result}  # fmt: skip


def test_calibration_of_another_model_is_refused(gallery_files, capsys):
    files = gallery_files
    for features, message in ((files["other"], "another model"), (files["narrow"], "16-d")):
        code, _, err = run_cli(capsys, "calibrate", str(features), "--verify",
                               str(files["calibration"]))  # fmt: skip
        assert code == 1 and message in err, err
        out = files["base"] / f"{features.stem}.index"
        code, _, err = run_cli(capsys, "index", "build", str(features), "--out", str(out),
                               "--calibration", str(files["calibration"]))  # fmt: skip
        assert code == 1 and message in err and not out.exists(), err
    code, _, err = run_cli(capsys, "calibrate", str(files["other"]), "--verify",
                           str(files["calibration"]), "--distance", "euclidean")  # fmt: skip
    assert code == 1 and "euclidean" in err, err
    with pytest.raises(CalibrationError, match="not a readable calibration file"):
        api.check_calibration(files["test"], files["test"])
    other_json = files["base"] / "other.json"
    other_json.write_text('{"format": "something else"}')
    with pytest.raises(CalibrationError, match="not a reid calibration"):
        api.check_calibration(files["test"], other_json)


def test_verify_measures_the_thresholds_on_other_identities(gallery_files):
    files = gallery_files
    check = api.check_calibration(files["test"], files["calibration"], bootstrap=50)
    positives, negatives = brute_pairs(two_sided(120, 5, seed=11))
    for row, level in zip(check.thresholds, files["result"].calibration.thresholds, strict=True):
        assert row.threshold == level.threshold
        assert row.measured_far == pytest.approx((negatives < row.threshold).mean(), abs=1e-4)
        assert row.measured_tar == pytest.approx((positives < row.threshold).mean(), abs=1e-3)
        assert row.far_ci[0] <= row.measured_far <= row.far_ci[1]


def test_search_marks_matches_under_the_calibrated_threshold(gallery_files, tmp_path, capsys):
    files = gallery_files
    index = tmp_path / "g.index"
    code, _, err = run_cli(capsys, "index", "build", str(files["test"]), "--out", str(index))
    assert code == 0, err
    code, _, err = run_cli(capsys, "search", str(index), str(files["test"]), "--threshold",
                           "far=0.01")  # fmt: skip
    assert code == 1 and "needs a calibration" in err
    code, out, err = run_cli(capsys, "index", "calibrate", str(index), str(files["calibration"]),
                             "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["calibration"]["model_sha256"] == "a" * 64, err
    threshold = files["result"].calibration.at_far(0.01).threshold
    result = api.search(index, files["test"], threshold="far=0.01", topk=20)
    assert result.threshold.distance == threshold and result.threshold.far == 0.01
    hits = [hit for entry in result.results for hit in entry.hits]
    assert {hit.match for hit in hits} == {True, False}
    assert all(hit.match == (hit.distance < threshold) for hit in hits)
    assert all(entry.found == entry.hits[0].match for entry in result.results)
    only = api.search(index, files["test"], threshold="far=0.01", topk=20, matches_only=True)
    for full, kept in zip(result.results, only.results, strict=True):
        assert kept.hits == tuple(hit for hit in full.hits if hit.match)
        assert kept.found == full.found
    csv_out = tmp_path / "hits.csv"
    api.search(index, files["test"], threshold="0", out=csv_out)
    lines = csv_out.read_text().splitlines()
    assert lines[0].endswith(",match") and all(line.endswith(",false") for line in lines[1:])
    with pytest.raises(CalibrationError, match=r"0\.0001 was not calibrated"):
        api.search(index, files["test"], threshold="far=0.0001")
    with pytest.raises(GalleryIndexError, match=r"features of checkpoint b+"):
        api.search(index, files["other"], threshold="far=0.01")
    code, _, err = run_cli(capsys, "search", str(index), str(files["test"]), "--matches-only")
    assert code == 2 and "threshold" in err


def brute_open_set(feats: Features, unknown: np.ndarray, threshold: float) -> tuple[float, float]:
    """DIR and unknown rejection by loops over the queries."""
    keep = ~np.isin(feats.gallery_pids, unknown)
    known = unknown_hits = known_total = unknown_total = 0
    q = feats.query_features / np.linalg.norm(feats.query_features, axis=1, keepdims=True)
    g = feats.gallery_features / np.linalg.norm(feats.gallery_features, axis=1, keepdims=True)
    for i in range(len(q)):
        pid, cam = feats.query_pids[i], feats.query_camids[i]
        allowed = keep & ~((feats.gallery_pids == pid) & (feats.gallery_camids == cam))
        d = 1.0 - g[allowed] @ q[i]
        j = int(np.argmin(d))
        if pid in unknown:
            unknown_total += 1
            unknown_hits += d[j] >= threshold
            continue
        if not ((feats.gallery_pids == pid) & (feats.gallery_camids != cam)).any():
            continue
        known_total += 1
        known += feats.gallery_pids[allowed][j] == pid and d[j] < threshold
    return known / known_total, unknown_hits / unknown_total


def test_open_set_rates_match_brute_force():
    feats = two_sided(60, 4, seed=7, spread=0.9)
    unknown = withheld_identities(feats, 15, seed=3)
    assert len(unknown) == 15 and np.array_equal(unknown, withheld_identities(feats, 15, 3))
    assert not np.array_equal(unknown, withheld_identities(feats, 15, 4))
    doc = evaluate_open_set(feats, "cosine", 15, 3, [(0.01, 0.45), (0.001, 0.35)])
    assert doc["identities_withheld"] == unknown.tolist() and doc["unknown_queries"] == 15
    for level in doc["thresholds"]:
        dir_, rejected = brute_open_set(feats, unknown, level["threshold"])
        assert level["dir"] == pytest.approx(dir_) and level["unknown_rejected"] == rejected
    fitted = evaluate_open_set(feats, "cosine", None, 0, None, fars=(0.2, 0.01))
    assert fitted["unknown_ids"] == 15 and fitted["fars_not_measurable"] == [0.01]
    (level,) = fitted["thresholds"]
    assert level["unknown_rejected"] >= 0.8 and level["false_accept"] <= 0.2
    with pytest.raises(FeaturesError, match="no known identity"):
        withheld_identities(feats, 60, 0)


def test_eval_open_set_cli(gallery_files, capsys):
    files = gallery_files
    args = ("eval", "--features", str(files["test"]), "--open-set", "--unknown-ids", "30",
            "--calibration", str(files["calibration"]), "--json")  # fmt: skip
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["open_set"]["unknown_ids"] == 30 and len(doc["open_set"]["thresholds"]) == 2
    assert doc["rank1"] > 0 and "DIR" in err
    code, out2, _ = run_cli(capsys, *args, "--seed", "1")
    assert (
        json.loads(out2)["open_set"]["identities_withheld"]
        != doc["open_set"]["identities_withheld"]
    )
    result = api.evaluate(features=files["test"], open_set=True, unknown_ids=30,
                          calibration=files["calibration"])  # fmt: skip
    assert isinstance(result.open_set, OpenSetResult)
    assert [level.far for level in result.open_set.thresholds] == [0.01, 0.001]
    assert result.open_set.to_json() == doc["open_set"]
    code, _, err = run_cli(capsys, "eval", "--features", str(files["test"]), "--unknown-ids", "3")
    assert code == 2 and "open" in err
    code, _, err = run_cli(capsys, "eval", "--features", str(files["other"]), "--open-set",
                           "--calibration", str(files["calibration"]))  # fmt: skip
    assert code == 1 and "another model" in err


def test_a_run_keeps_its_calibration_in_exports_and_features(dataset, tmp_path, capsys):
    """Calibrate a checkpoint on its dataset's validation identities: the calibration lands in
    the run folder, names the checkpoint, goes into an export's metadata, and the features that
    `reid embed` writes name the same checkpoint, so an index accepts the calibration."""
    checkpoint = make_checkpoint(tmp_path, "osnet_x0_25", data={"root": str(dataset), "workers": 0})
    sha = file_sha256(checkpoint)
    code, out, err = run_cli(capsys, "calibrate", str(checkpoint), "--far", "0.1,0.05",
                             "--bootstrap", "50", "--json", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["model_sha256"] == sha and doc["split"] == "val"
    assert Path(doc["out"]) == tmp_path / "calibration.json" and Path(doc["figure"]).is_file()
    assert doc["pairs"]["identities"] == 10
    exported = api.export(checkpoint, formats="onnx", out=tmp_path / "m.onnx")
    meta = json.loads(Path(exported.exports[0].metadata_path).read_text())
    assert meta["calibration"]["model_sha256"] == sha and "curve" not in meta["calibration"]
    feats = tmp_path / "test.npz"
    code, _, err = run_cli(capsys, "embed", str(tmp_path / "m.onnx"), "--dataset", str(dataset),
                           "--out", str(feats))  # fmt: skip
    assert code == 0, err
    assert str(np.load(feats)["model_sha256"]) == sha
    index = tmp_path / "t.index"
    info = api.index_build(feats, index, calibration=tmp_path / "calibration.json")
    assert info.calibration.thresholds[0].far == 0.1
    code, out, err = run_cli(capsys, "eval", str(checkpoint), "--open-set", "--json")
    assert code == 0, err
    assert json.loads(out)["open_set"]["calibration"] == str(tmp_path / "calibration.json")
    done = reid("calibrate", str(tmp_path / "nowhere"))
    assert done.returncode == 1 and done.stderr.startswith("error:")
