"""`reid eval` with a model: a run folder or checkpoint on its prepared dataset."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from reidcli import api
from reidcli.inference.checkpoints import load_trained_model
from reidcli.metrics.evaluate import PUBLIC_KEYS
from reidcli.metrics.features import load_features
from reidcli.recipe import load_recipe
from tests.conftest import reid

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = set(PUBLIC_KEYS)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("evalrun")
    data = base / "data"
    done = reid(
        "prepare", "synthetic", "--out", str(data), "--ids", "40", "--cams", "3",
        "--images-per-id", "6", "--size", "64x32", "--val-ids", "6",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    recipe = {
        "data": {"dataset": "synthetic", "root": str(data), "height": 64, "width": 32,
                 "p": 4, "k": 4, "workers": 0},
        "model": {"name": "osnet_x0_25"},
        "loss": [{"name": "cross_entropy"}],
        "schedule": {"name": "constant"},
        "train": {"epochs": 1, "eval_every": 1},
        "eval": {"flip": True, "normalize": "whole"},
    }  # fmt: skip
    path = base / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    api.train(load_recipe(path), base / "run", device="cpu")
    return base / "run"


def test_eval_run_json_and_eval_json(run, tmp_path):
    feats = tmp_path / "feats.npz"
    out = reid("eval", str(run), "--json", "--save-features", str(feats))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc.keys() >= PUBLIC
    assert doc["num_query"] > 0 and 0 <= doc["mAP"] <= 1
    saved = json.loads((run / "eval.json").read_text())
    assert saved["mAP"] == doc["mAP"] and saved["checkpoint"].endswith("best.pt")
    loaded = load_features(feats)
    assert loaded.has_paths and loaded.query_features.shape[1] == 512  # OSNet: 512-d
    # The saved features score the same as the model path.
    again = json.loads(reid("eval", "--features", str(feats), "--json").stdout)
    assert again["mAP"] == pytest.approx(doc["mAP"], abs=1e-9)


def test_features_are_model_embed(run, tmp_path):
    feats = tmp_path / "f.npz"
    assert reid("eval", str(run / "last.pt"), "--save-features", str(feats)).returncode == 0
    loaded = load_features(feats)
    model, recipe = load_trained_model(run / "last.pt")
    from reidcli.data.dataset import load_image
    from reidcli.data.transforms import build_eval_transform

    transform = build_eval_transform(recipe.data)
    images = torch.stack([transform(load_image(p)) for p in loaded.query_paths[:4]])
    with torch.no_grad():
        expected = model.embed(images, flip=True, normalize="whole").numpy()
    np.testing.assert_allclose(loaded.query_features[:4], expected, atol=1e-5)


def test_eval_val_split_and_no_flip(run):
    out = reid("eval", str(run), "--split", "val", "--no-flip", "--json")
    assert out.returncode == 0, out.stderr
    assert (run / "eval_val.json").exists()
    doc = json.loads(out.stdout)
    val_json = json.loads((run / "eval_val.json").read_text())
    assert val_json["split"] == "val" and doc["num_query"] == val_json["num_query"] > 0
    test_json = json.loads((run / "eval.json").read_text()) if (run / "eval.json").exists() else {}
    assert doc["num_query"] != test_json.get("num_query")


def test_newest_run_is_used_when_no_argument(run, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(run, runs / "only")
    out = reid("eval", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "evaluating the newest run" in out.stderr and "only" in out.stderr


def test_checkpoint_that_does_not_fit_the_recipe(run, tmp_path):
    weights = tmp_path / "weights.pth"
    torch.save(torch.load(run / "last.pt", weights_only=True)["model"], weights)
    recipe = tmp_path / "other.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"name": "osnet_x0_5"}}))
    out = reid("eval", str(weights), "--recipe", str(recipe))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "error:" in out.stderr


def test_dataset_moved_since_prepare(run, tmp_path):
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    data = Path(recipe["data"]["root"])
    moved = data.with_name("moved")
    data.rename(moved)
    try:
        out = reid("eval", str(run))
    finally:
        moved.rename(data)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "prepare" in out.stderr


def test_cross_dataset_eval_keeps_one_result_per_dataset(run, tmp_path):
    other = tmp_path / "other_set"
    done = reid(
        "prepare", "synthetic", "--out", str(other), "--ids", "30", "--cams", "2",
        "--images-per-id", "6", "--size", "64x32", "--seed", "7",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    home = api.evaluate(run, device="cpu").to_json()
    before = (run / "eval.json").read_bytes()
    away = api.evaluate(run, overrides={"data.root": str(other)}, device="cpu").to_json()
    assert away["eval_json"].endswith("eval_other_set.json") and away["data_root"] == str(other)
    assert (run / "eval.json").read_bytes() == before  # the in-domain result is kept
    from reidcli.data.manifest import load_manifest

    queries = int((load_manifest(other)["split"] == "query").sum())
    assert away["num_query"] + away["num_skipped"] == queries  # the other dataset's queries
    assert queries != home["num_query"] + home["num_skipped"]
    changed = reid("eval", str(run), "--set", "model.name=osnet_x0_5")
    assert changed.returncode == 2 and "model.* cannot change" in changed.stderr


def test_library_evaluation_writes_nothing_on_the_terminal(run, tmp_path, capfd):
    feats = tmp_path / "f.npz"
    api.evaluate(run, save_features=feats, device="cpu")
    api.evaluate(features=feats, overrides={"eval.rerank.enabled": True})
    api.rerank(feats, overrides=["eval.rerank.k1=10"])
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_recipe_protocol_changes_the_result(run, tmp_path):
    feats = tmp_path / "f.npz"
    api.evaluate(run, save_features=feats, device="cpu")
    market = api.evaluate(features=feats).detail
    cuhk = api.evaluate(features=feats, overrides={"eval.protocol": "cuhk03"}).detail
    assert (market["protocol"], cuhk["protocol"]) == ("market", "cuhk03")
    # single-gallery-shot: one image per identity, so fewer distractors precede the match
    assert cuhk["rank1"] > market["rank1"]
    assert cuhk["mAP"] == market["mAP"]  # mAP stays the Market computation
    recipe = tmp_path / "cuhk.yaml"
    recipe.write_text(yaml.safe_dump({"eval": {"protocol": "cuhk03"}}))
    from_file = reid("eval", "--features", str(feats), "--recipe", str(recipe), "--json")
    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout)["rank1"] == pytest.approx(cuhk["rank1"], abs=1e-12)
