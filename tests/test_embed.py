"""`reid embed`: images and prepared datasets through a checkpoint, ONNX and TorchScript, and the
export -> embed -> eval --features path reproducing `reid eval RUN` on the quickstart data."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from PIL import Image

from reidcli import api
from reidcli.recipe import load_recipe
from tests.conftest import ROOT, reid
from tests.test_export import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A quickstart run: `reid prepare synthetic` data, recipes/quickstart.yaml, one epoch."""
    base = tmp_path_factory.mktemp("embedrun")
    data = base / "data"
    done = reid("prepare", "synthetic", "--out", str(data), "--ids", "30", "--cams", "3",
                "--images-per-id", "6")  # fmt: skip
    assert done.returncode == 0, done.stderr
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    recipe["data"].update(root=str(data), workers=0, p=4)
    recipe["schedule"] = {"name": "constant"}
    # The quickstart's own precision (`train.amp: auto`: bf16 on CPUs with native bf16) and
    # channels_last; `reid eval` embeds in fp32 all the same (`eval.amp: off`), the embedding
    # an fp32 export writes.
    assert recipe["train"]["amp"] == "auto" and recipe["train"]["channels_last"]
    recipe["train"].update(epochs=1, eval_every=0, val_ids=0)
    path = base / "quickstart.yaml"
    path.write_text(yaml.safe_dump(recipe))
    api.train(load_recipe(path), base / "run", device="cpu")
    return base / "run"


@pytest.fixture(scope="module")
def exported(run) -> dict:
    """The run exported with the defaults (ONNX, torch.onnx's dynamo exporter) and TorchScript."""
    result = api.export(run, formats="onnx", out=run / "model.onnx").to_json()
    api.export(run, formats="torchscript", out=run / "model.torchscript")
    return {"onnx": run / "model.onnx", "torchscript": run / "model.torchscript",
            "exporter": result["exports"][0]["exporter"]}  # fmt: skip


def test_export_embed_eval_reproduces_eval_of_the_run(run, exported, tmp_path, capsys):
    assert exported["exporter"] == "dynamo"
    meta = json.loads(Path(str(exported["onnx"]) + ".metadata.json").read_text())
    declared = [o.version for o in onnx.load(str(exported["onnx"])).opset_import if not o.domain]
    assert meta["exporter"] == "dynamo" and [meta["opset"]] == declared
    code, stdout, stderr = run_cli(capsys, "eval", str(run), "--json")
    assert code == 0, stderr
    direct = json.loads(stdout)
    data = yaml.safe_load((run / "recipe.yaml").read_text())["data"]["root"]
    feats = tmp_path / "onnx_feats.npz"
    code, stdout, stderr = run_cli(capsys, "embed", str(exported["onnx"]), "--dataset", data,
                                   "--out", str(feats), "--json")  # fmt: skip
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["backend"] == "onnxruntime" and doc["num_query"] == direct["num_query"]
    code, stdout, stderr = run_cli(capsys, "eval", "--features", str(feats), "--json")
    assert code == 0, stderr
    deployed = json.loads(stdout)
    for key in METRICS:
        assert deployed[key] == pytest.approx(direct[key], abs=1e-4), key
    # The checkpoint through `reid embed` gives `reid eval --save-features` exactly.
    ckpt_feats, saved = tmp_path / "ckpt.npz", tmp_path / "saved.npz"
    assert run_cli(capsys, "embed", str(run), "--dataset", data, "--out", str(ckpt_feats))[0] == 0
    assert run_cli(capsys, "eval", str(run), "--save-features", str(saved))[0] == 0
    a, b, c = np.load(ckpt_feats), np.load(saved), np.load(feats)
    for key in ("query_features", "gallery_features"):
        np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_allclose(c[key], b[key], atol=1e-4)
    for key in ("query_pids", "gallery_camids", "query_paths"):
        np.testing.assert_array_equal(c[key], b[key])


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> dict:
    """Images of several sizes and modes, nested folders, a list file and a corrupt file."""
    base = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    folder = base / "folder"
    (folder / "sub").mkdir(parents=True)

    def image(path: Path, height: int, width: int, mode: str = "RGB") -> Path:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(path)
        return path

    single = image(base / "single.png", 150, 60)
    image(folder / "b.jpg", 70, 30)
    image(folder / "a.png", 128, 64, "L")  # grayscale: decoded as RGB
    image(folder / "sub" / "c.png", 300, 100, "RGBA")
    (folder / "notes.txt").write_text("not an image")  # ignored inside folders
    broken = folder / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    listed = image(base / "listed.jpg", 90, 40)
    listing = base / "list.txt"
    listing.write_text(f"# crops\n{listed.name}\n\n{single}\n")
    order = [single, folder / "a.png", folder / "b.jpg", folder / "sub" / "c.png", listed, single]
    return {"single": single, "folder": folder, "list": listing, "broken": broken,
            "order": [str(p) for p in order]}  # fmt: skip


def embed(capsys, model, *args) -> tuple[int, dict | None, str]:
    code, stdout, stderr = run_cli(capsys, "embed", str(model), *map(str, args), "--json")
    return code, json.loads(stdout) if code == 0 else None, stderr


def test_every_backend_gives_the_same_features(run, exported, crops, tmp_path, capsys):
    inputs = (crops["single"], crops["folder"], crops["list"])
    results = {}
    for name, model, extra in (
        ("onnx", exported["onnx"], ["--batch", "3", "--workers", "0"]),
        ("torchscript", exported["torchscript"], ["--workers", "2"]),
        ("checkpoint", run, ["--device", "cpu"]),
    ):
        out = tmp_path / f"{name}.npz"
        code, doc, stderr = embed(capsys, model, *inputs, "--out", out, *extra)
        assert code == 0, stderr
        assert doc["num_images"] == 6 and doc["skipped"][0]["path"] == str(crops["broken"])
        assert "skipped unreadable image" in stderr and "broken.jpg" in stderr
        with np.load(out) as saved:
            assert saved["features"].dtype == np.float32 and saved["features"].shape == (6, 512)
            assert list(saved["paths"]) == crops["order"]
            results[name] = saved["features"]
    np.testing.assert_allclose(results["onnx"], results["checkpoint"], atol=1e-4)
    np.testing.assert_allclose(results["torchscript"], results["checkpoint"], atol=1e-4)
    # The list names `single` twice over: same image, same features.
    np.testing.assert_array_equal(results["onnx"][0], results["onnx"][5])
    assert not np.allclose(results["onnx"][0], results["onnx"][1])

    code, _, stderr = embed(capsys, exported["onnx"], crops["folder"], "--strict", "--out",
                            tmp_path / "strict.npz")  # fmt: skip
    assert code == 1 and "broken.jpg" in stderr and "--strict" in stderr
    assert not (tmp_path / "strict.npz").exists()


def test_search_embeds_image_queries_as_embed_does(run, exported, crops, tmp_path, capsys):
    pytest.importorskip("faiss")
    gallery = tmp_path / "gallery.npz"
    code, _, stderr = embed(capsys, run, crops["folder"], "--out", gallery, "--device", "cpu")
    assert code == 0, stderr
    with np.load(gallery) as saved:  # a checkpoint's file states the distance it is scored by
        assert str(saved["distance"]) == "cosine"
    api.index_build(gallery, tmp_path / "g.idx")
    args = ["--model", str(exported["onnx"]), "--topk", "2", "--json", "-q"]
    code, stdout, stderr = run_cli(
        capsys, "search", str(tmp_path / "g.idx"), str(crops["single"]), *args
    )
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert [e["path"] for e in doc] == [str(crops["single"])] and len(doc[0]["hits"]) == 2
    queries = tmp_path / "queries.npz"
    code, _, stderr = embed(capsys, exported["onnx"], crops["single"], "--out", queries)
    with np.load(queries) as saved:  # an export does not record one
        assert "distance" not in saved.files
    expected = api.search(tmp_path / "g.idx", queries, topk=2).to_json()["results"]
    assert [h["path"] for h in doc[0]["hits"]] == [h["path"] for h in expected[0]["hits"]]
    np.testing.assert_allclose([h["distance"] for h in doc[0]["hits"]],
                               [h["distance"] for h in expected[0]["hits"]], atol=1e-6)  # fmt: skip


def test_onnx_without_metadata_needs_the_contract(exported, crops, tmp_path, capsys):
    bare = tmp_path / "bare.onnx"
    model = onnx.load(str(exported["onnx"]))
    del model.metadata_props[:]
    onnx.save(model, str(bare))
    code, _, stderr = embed(capsys, bare, crops["single"], "--out", tmp_path / "x.npz")
    assert code == 2 and "no reid metadata" in stderr and "--size" in stderr
    contract = ["--size", "128x64", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]
    code, _, stderr = embed(capsys, bare, crops["single"], *contract, "--out", tmp_path / "b.npz")
    assert code == 0, stderr
    code, _, stderr = embed(capsys, exported["onnx"], crops["single"], "--out",
                              tmp_path / "m.npz")  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "b.npz")["features"],
                                  np.load(tmp_path / "m.npz")["features"])  # fmt: skip
    # The sidecar alone is metadata enough (BoxMOT's layout).
    shutil.copy(str(exported["onnx"]) + ".metadata.json", str(bare) + ".metadata.json")
    assert embed(capsys, bare, crops["single"], "--out", tmp_path / "s.npz")[0] == 0
    # A file with metadata refuses a second contract.
    code, _, stderr = embed(capsys, bare, crops["single"], *contract)
    assert code == 2 and "carries its preprocessing" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "12x"], "HEIGHTxWIDTH"),
        (["--size", "0x64", "--mean", "0,0,0", "--std", "1,1,1"], "sides must be in 1"),
        (["--size", "128x64"], "go together"),
        (["--size", "128x64", "--mean", "0,0", "--std", "1,1,1"], "three numbers"),
        (["--size", "128x64", "--mean", "0,0,0", "--std", "1,0,1"], "> 0"),
        (["--device", "tpu"], "cuda"),
        (["--dataset", "somewhere"], "not both"),
        (["--recipe", "x.yaml"], "recipe applies to checkpoints"),
    ],
)
def test_usage_errors_exit_2(exported, crops, capsys, args, message):
    code, _, stderr = embed(capsys, exported["onnx"], crops["single"], *args)
    assert code == 2, stderr
    assert message in stderr and "Traceback" not in stderr


def test_input_errors_exit_1(exported, crops, tmp_path, capsys):
    code, _, stderr = embed(capsys, tmp_path / "missing.onnx", crops["single"])
    assert code == 1 and "no such run folder, checkpoint or exported model" in stderr
    code, _, stderr = embed(capsys, exported["onnx"], tmp_path / "nowhere")
    assert code == 1 and "no such image, folder or list file" in stderr
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    code, _, stderr = embed(capsys, exported["onnx"], binary)
    assert code == 1 and "nor a text list of paths" in stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, stderr = embed(capsys, exported["onnx"], empty)
    assert code == 1 and "no images" in stderr
    code, _, stderr = run_cli(capsys, "embed", str(exported["onnx"]))
    assert code == 2 and "dataset" in stderr


def test_static_batch_file_pads_the_last_batch(run, exported, crops, tmp_path, capsys):
    static = tmp_path / "static.onnx"
    api.export(run, formats="onnx", out=static, static_batch=4, exporter="legacy")
    code, doc, stderr = embed(capsys, static, crops["folder"], crops["list"], "--out",
                              tmp_path / "s.npz")  # fmt: skip
    assert code == 0, stderr
    assert doc["batch_size"] == 4 and doc["num_images"] == 5  # short batches are padded
    code, _, _ = embed(capsys, exported["onnx"], crops["folder"], crops["list"], "--out",
                       tmp_path / "d.npz")  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "s.npz")["features"],
                               np.load(tmp_path / "d.npz")["features"], atol=1e-4)  # fmt: skip
    code, _, stderr = embed(capsys, static, crops["single"], "--batch", "3")
    assert code == 2 and "exactly 4" in stderr


def test_bare_weights_with_a_recipe(run, crops, tmp_path, capsys):
    weights = tmp_path / "weights.pth"
    torch.save(torch.load(run / "last.pt", weights_only=True)["model"], weights)
    code, _, stderr = embed(capsys, weights, crops["single"], "--out", tmp_path / "w.npz")
    assert code == 1 and "--recipe" in stderr
    code, _, stderr = embed(capsys, weights, crops["single"], "--recipe", run / "recipe.yaml",
                            "--out", tmp_path / "w.npz")  # fmt: skip
    assert code == 0, stderr
    code, _, _ = embed(capsys, run / "last.pt", crops["single"], "--out", tmp_path / "c.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "w.npz")["features"],
                                  np.load(tmp_path / "c.npz")["features"])  # fmt: skip


def readme_tracker_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("A tracker uses the file with the sidecar's numbers:") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_tracker_snippet_matches_embed(run, exported, tmp_path, capsys, monkeypatch):
    shutil.copy(exported["onnx"], tmp_path / "model.onnx")
    shutil.copy(str(exported["onnx"]) + ".metadata.json", tmp_path / "model.onnx.metadata.json")
    data = Path(yaml.safe_load((run / "recipe.yaml").read_text())["data"]["root"])
    people = sorted((data / "images" / "query").glob("*.jpg"))[:3]
    assert len(people) == 3
    frame = np.zeros((400, 300, 3), np.uint8)
    boxes = np.array([[10, 20], [150, 40], [60, 250]])
    crops = []
    for (x, y), path in zip(boxes, people, strict=True):
        person = np.asarray(Image.open(path).convert("RGB").resize((50, 110)))  # a smaller crop
        frame[y : y + 110, x : x + 50] = person
        crops.append(tmp_path / path.name)
        Image.fromarray(person).save(crops[-1])
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(readme_tracker_snippet(), namespace)
    boxes = np.concatenate([boxes, boxes + np.array([50, 110])], axis=1)  # x1, y1, x2, y2
    got = namespace["features"](frame, boxes)
    code, _, stderr = embed(capsys, tmp_path / "model.onnx", *crops, "--out", tmp_path / "e.npz")
    assert code == 0, stderr
    expected = np.load(tmp_path / "e.npz")["features"]
    # PIL's and torchvision's antialiased resizes round differently; the features agree closely.
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert got.shape == expected.shape and cos.min() > 0.999
    others = (got[0] * expected[1]).sum() / np.linalg.norm(got[0]) / np.linalg.norm(expected[1])
    assert others < cos.min()  # a different person is further away


def test_torchrun_shards_the_inputs_and_the_parts_add_as_segments(run, tmp_path):
    pytest.importorskip("faiss")
    import subprocess
    import sys

    from tests.train_support import ONE_THREAD

    crops = tmp_path / "crops"
    crops.mkdir()
    rng = np.random.default_rng(1)
    for i in range(21):  # two shards of 10 and 11
        pixels = rng.integers(0, 256, (60 + i, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(crops / f"c{i:02d}.jpg")
    one = api.embed(run, (crops,), out=tmp_path / "one.npz", device="cpu", workers=0)
    parts = tmp_path / "parts"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", "-m", "reidcli", "embed", str(run), str(crops), "--out", str(parts),
               "--device", "cpu", "--workers", "0"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("embedded 21 images") == 1  # rank 0 reports for both
    listing = json.loads((parts / "parts.json").read_text())
    assert listing == {"parts": ["part-00000-of-00002.npz", "part-00001-of-00002.npz"],
                       "rows": [10, 11], "world_size": 2, "inputs": 21}  # fmt: skip
    whole = np.load(one.out)
    pieces = [np.load(parts / name) for name in listing["parts"]]
    assert np.concatenate([p["paths"] for p in pieces]).tolist() == whole["paths"].tolist()
    # other batch boundaries: the same features up to float rounding
    np.testing.assert_allclose(np.concatenate([p["features"] for p in pieces]),
                               whole["features"], rtol=0, atol=1e-5)  # fmt: skip
    assert all(str(p.get("model_sha256")) == str(whole.get("model_sha256")) for p in pieces)
    # the parts go into an index as two segments in one step
    seed = tmp_path / "seed.npz"
    stated = {k: whole[k] for k in ("model_sha256", "distance") if k in whole}
    np.savez(seed, features=whole["features"][:2] + 1, paths=np.array(["x.jpg", "y.jpg"]),
             **stated)  # fmt: skip
    api.index_build(seed, tmp_path / "g.idx")
    added = api.index_add(tmp_path / "g.idx", parts).to_json()
    assert (added["added"], added["parts"], added["count"]) == (21, 2, 23)
    info = api.index_info(tmp_path / "g.idx").to_json()
    assert [s["rows"] for s in info["segments"]] == [2, 10, 11]
    own = api.search(tmp_path / "g.idx", one.out, topk=1).to_json()
    assert all(e["hits"][0]["path"] == e["path"] for e in own["results"])
    # a folder that is not (only) parts is refused before any work
    (parts / "notes.txt").write_text("x")
    refused = subprocess.run(command, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert refused.returncode != 0 and "not reid embed parts" in refused.stderr
    assert (parts / "notes.txt").is_file() and (parts / "parts.json").is_file()
