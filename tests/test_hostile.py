"""`reid` under hostile but realistic input: every case exits with one line and the README's
exit code (1 bad data, 2 usage), writes nothing partial and leaves the files around it as they
were. Each case is (name, how to make its input, arguments, exit code, message)."""

import hashlib
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from reidcli import api
from reidcli.recipe import load_recipe
from tests.conftest import reid

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_RUN = {
    "data": {"dataset": "synthetic", "height": 64, "width": 32, "p": 4, "k": 4, "workers": 0},
    "model": {"name": "osnet_x0_25", "pretrained": "none"},
    "schedule": {"name": "constant"},
    "train": {"epochs": 1, "eval_every": 0, "log_every": 1},
    "eval": {"flip": False, "normalize": "whole"},
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """A prepared synthetic dataset, a one-epoch run on it, its features file and an index."""
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    api.prepare("synthetic", out=data, ids=12, cams=3, images_per_id=6, size=(64, 32))
    recipe = {**TINY_RUN, "data": {**TINY_RUN["data"], "root": str(data)}}
    (root / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    api.train(load_recipe(root / "tiny.yaml"), root / "run", device="cpu")
    api.evaluate(root / "run", save_features=root / "feats.npz", device="cpu")
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((25, 8)).astype(np.float32)
    np.savez(
        root / "gallery.npz", features=gallery, paths=np.array([f"g/{i}.jpg" for i in range(25)])
    )
    api.index_build(root / "gallery.npz", root / "g.idx")
    onnx = root / "bare.onnx"  # an ONNX file that carries no metadata
    api.export(root / "run", formats="onnx", out=onnx, check=False)
    _strip_metadata(onnx)
    return {"onnx": onnx, "root": root, "data": data, "run": root / "run",
            "recipe": root / "tiny.yaml", "feats": root / "feats.npz", "index": root / "g.idx",
            "gallery": root / "gallery.npz"}  # fmt: skip


def _strip_metadata(path: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    Path(f"{path}.metadata.json").unlink()


def digest(path: Path) -> dict[str, str]:
    """Content hash of every file under `path` (or of the file)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f): hashlib.sha1(f.read_bytes()).hexdigest() for f in files}


def features(path: Path, q_pids, g_pids, q_cams, g_cams, dim: int = 4) -> Path:
    rng = np.random.default_rng(1)
    np.savez(path, query_features=rng.standard_normal((len(q_pids), dim)),
             gallery_features=rng.standard_normal((len(g_pids), dim)), query_pids=q_pids,
             gallery_pids=g_pids, query_camids=q_cams, gallery_camids=g_cams)  # fmt: skip
    return path


def huge_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG whose header says width x height (the pixel data is not there)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk
    data += struct.pack(">I", zlib.crc32(chunk)) + b"\0\0\0\0IEND\xaeB`\x82"
    path.write_bytes(data)
    return path


def csv_dataset(tmp: Path, rows: list[str], encoding: str = "utf-8") -> Path:
    from PIL import Image

    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        Image.new("RGB", (32, 64), (90, 20, 200)).save(tmp / name)
    lines = ["path,pid,camid,split", *rows]
    (tmp / "list.csv").write_bytes("\n".join(lines).encode(encoding, errors="strict"))
    return tmp / "list.csv"


GOOD_ROWS = ["c.jpg,7,1,query", "d.jpg,7,2,gallery"]


def case_synthetic_into_user_folder(b, tmp):
    (tmp / "d" / "images" / "mine").mkdir(parents=True)
    (tmp / "d" / "images" / "mine" / "notes.txt").write_text("x")
    return ["prepare", "synthetic", "--ids", "4", "--out", str(tmp / "d")], [tmp / "d"]


def case_synthetic_over_own_dataset(b, tmp):
    assert reid("prepare", "synthetic", "--ids", "4", "--out", str(tmp / "d")).returncode == 0
    return ["prepare", "synthetic", "--ids", "5", "--out", str(tmp / "d")], [tmp / "d"]


def case_overwrite_with_user_file_inside(b, tmp):
    assert reid("prepare", "synthetic", "--ids", "4", "--out", str(tmp / "d")).returncode == 0
    (tmp / "d" / "images" / "mine.txt").write_text("x")
    return ["prepare", "synthetic", "--ids", "4", "--out", str(tmp / "d"), "--overwrite"], [
        tmp / "d"
    ]


def case_out_is_a_file(verb):
    def make(b, tmp):
        (tmp / "file").write_text("x")
        args = {"prepare": ["prepare", "synthetic", "--ids", "4"],
                "train": ["train", str(b["recipe"])]}[verb]  # fmt: skip
        return [*args, "--out", str(tmp / "file")], [tmp / "file"]

    return make


def case_out_is_a_folder(args_of):
    def make(b, tmp):
        (tmp / "out").mkdir()
        (tmp / "out" / "keep.txt").write_text("x")
        return args_of(b, str(tmp / "out")), [tmp / "out"]

    return make


def case_train_into_foreign_folder(b, tmp):
    (tmp / "run").mkdir()
    (tmp / "run" / "thesis.tex").write_text("x")
    return ["train", str(b["recipe"]), "--out", str(tmp / "run")], [tmp / "run"]


def case_train_over_a_run(b, tmp):
    return ["train", str(b["recipe"]), "--out", str(b["run"])], [b["run"]]


def case_lock_is_a_folder(b, tmp):
    run = tmp / "run"
    run.mkdir()
    (run / ".reid.lock").mkdir()
    return ["train", str(b["recipe"]), "--out", str(run)], [run]


def case_recipe(text):
    def make(b, tmp):
        (tmp / "r.yaml").write_text(text)
        return ["recipe", "validate", str(tmp / "r.yaml")], []

    return make


ALIAS_BOMB = "".join(
    f"{a}: &{a} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
    for p, a in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def case_set(*overrides):
    def make(b, tmp):
        args = ["recipe", "show", str(b["recipe"])]
        for item in overrides:
            args += ["--set", item]
        return args, []

    return make


def case_csv(rows, encoding="utf-8"):
    def make(b, tmp):
        listing = csv_dataset(tmp, rows, encoding)
        return ["prepare", "folder", "--root", str(listing), "--out", str(tmp / "p")], []

    return make


def case_bomb_image(b, tmp):
    listing = csv_dataset(tmp, ["a.jpg,3,1,train", "bomb.png,3,2,train", *GOOD_ROWS])
    huge_png(tmp / "bomb.png")
    return ["prepare", "folder", "--root", str(listing), "--out", str(tmp / "p"), "--strict"], []


def case_features(q_pids, g_pids, q_cams, g_cams):
    def make(b, tmp):
        path = features(tmp / "f.npz", q_pids, g_pids, q_cams, g_cams)
        return ["eval", "--features", str(path)], [path]

    return make


def case_text_as_features(b, tmp):
    (tmp / "f.npz").write_text("query,gallery\n1,2\n")
    return ["rerank", str(tmp / "f.npz")], [tmp / "f.npz"]


def case_small_rerank(b, tmp):
    path = features(tmp / "f.npz", [1, 2], [1, 2, 3], [1, 1], [2, 2, 2])
    return ["rerank", str(path)], [path]


def case_embed_contract(*extra):
    def make(b, tmp):
        onnx = tmp / "m.onnx"
        onnx.write_bytes(b"not onnx")
        return ["embed", str(onnx), str(b["data"] / "images" / "query"), "--out",
                str(tmp / "o.npz"), *extra], [onnx]  # fmt: skip

    return make


def case_onnx_at_wrong_size(b, tmp):
    images = b["data"] / "images" / "query"
    return ["embed", str(b["onnx"]), str(images), "--size", "32x16", "--mean", "0.5,0.5,0.5",
            "--std", "0.2,0.2,0.2", "--out", str(tmp / "o.npz")], [b["onnx"]]  # fmt: skip


def case_embed_unreadable(b, tmp):
    (tmp / "imgs").mkdir()
    for name in ("a.jpg", "b.png"):
        (tmp / "imgs" / name).write_bytes(b"\xff\xd8 truncated")
    return ["embed", str(b["run"]), str(tmp / "imgs"), "--out", str(tmp / "o.npz")], []


def case_corrupt_recipe_checkpoint(b, tmp):
    state = torch.load(b["run"] / "last.pt", weights_only=True)
    state["recipe"] = state["recipe"][:40]
    torch.save(state, tmp / "bad.pt")
    return ["eval", str(tmp / "bad.pt")], [tmp / "bad.pt"]


def case_export_sidecar_is_folder(b, tmp):
    (tmp / "m.onnx.metadata.json").mkdir()
    return ["export", str(b["run"]), "--out", str(tmp / "m.onnx"), "--no-check"], [tmp]


def case_index_remove_missing(b, tmp):
    listing = tmp / "erase.txt"
    listing.write_text("./g/1.jpg\ng/2.jpg\ng/not-there.jpg\n")
    return ["index", "remove", str(b["index"]), "--paths", str(listing)], [b["index"]]


def case_index_overwrite_foreign(b, tmp):
    (tmp / "photo.idx").write_bytes(b"my photo")
    return ["index", "build", str(b["gallery"]), "--out", str(tmp / "photo.idx"),
            "--overwrite"], [tmp / "photo.idx"]  # fmt: skip


def case_truncated_image_no_verify(b, tmp):
    out = tmp / "d"
    assert reid("prepare", "synthetic", "--ids", "6", "--cams", "2", "--images-per-id", "4",
                "--size", "64x32", "--out", str(out), "--no-verify").returncode == 0  # fmt: skip
    victim = sorted((out / "images" / "query").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    return ["eval", str(b["run"]), "--set", f"data.root={out}", "--set", "data.workers=1"], []


def command(text: str, *watched: str):
    """A case given as a command line with `{run}`, `{data}`, `{tmp}`... filled in."""

    def make(b, tmp):
        names = {**{k: str(v) for k, v in b.items()}, "tmp": str(tmp)}
        return [part.format(**names) for part in text.split()], [
            Path(w.format(**names)) for w in watched
        ]

    return make


def into_folder(text: str):
    """A case whose `{out}` is an existing folder holding a file of the user's."""

    def make(b, tmp):
        (tmp / "out").mkdir()
        (tmp / "out" / "keep.txt").write_text("x")
        args, _ = command(text)({**b, "out": tmp / "out"}, tmp)
        return args, [tmp / "out"]

    return make


QUERY_IMAGES = "{data}/images/query"
ROWS_TRAIN = ["b.jpg,3,2,train", *GOOD_ROWS]
CASES = [
    ("prepare into a folder of the user's", case_synthetic_into_user_folder, 2, "did not write"),
    ("prepare over its own dataset", case_synthetic_over_own_dataset, 2, "--overwrite"),
    ("--overwrite with a user file inside", case_overwrite_with_user_file_inside, 2, "mine.txt"),
    ("prepare --out FILE", case_out_is_a_file("prepare"), 2, "is a file"),
    ("train --out FILE", case_out_is_a_file("train"), 2, "is a file"),
    ("train into a folder of the user's", case_train_into_foreign_folder, 2, "did not write"),
    ("train over a run", case_train_over_a_run, 2, "--resume"),
    ("lock file is a folder", case_lock_is_a_folder, 2, "is a folder"),
    ("prepare --ids 0", command("prepare synthetic --ids 0 --out {tmp}/x"), 2, "--ids"),
    ("prepare --cams 0", command("prepare synthetic --cams 0 --out {tmp}/x"), 2, "--cams"),
    ("prepare --size 1x1", command("prepare synthetic --size 1x1 --out {tmp}/x"), 2, "--size"),
    ("prepare --size huge", command("prepare synthetic --size 100000x100000 --out {tmp}/x"), 2,
     "--size"),
    ("YAML alias bomb", case_recipe(ALIAS_BOMB), 2, "aliases"),
    ("duplicate keys", case_recipe("train:\n  epochs: 3\ntrain:\n  epochs: 4\n"), 2,
     "duplicate key"),
    ("deep nesting", case_recipe("a: " + "[" * 5000 + "]" * 5000 + "\n"), 2, "recipe"),
    ("seed beyond int64", case_set("train.seed=99999999999999999999"), 2, "train.seed"),
    ("height beyond int64", case_set("data.height=99999999999999999999"), 2, "data.height"),
    ("8x8 input", case_set("data.height=8", "data.width=8"), 2, "at least 13x13"),
    ("lr inf", case_set("optim.lr=.inf"), 2, "finite"),
    ("lr 1e309", case_set("optim.lr=1e309"), 2, "finite"),
    ("weight decay nan", case_set("optim.weight_decay=.nan"), 2, "finite"),
    ("CSV pid 10**30", case_csv([f"a.jpg,{10**30},1,train", *ROWS_TRAIN]), 1, "pid 1000"),
    ("CSV pid -5", case_csv(["a.jpg,-5,1,train", *ROWS_TRAIN]), 1, "pid -5"),
    ("CSV not UTF-8", case_csv(["a.jpg,3,1,train", "b.jpg,3,2,train", "c.jpg,7,1,query",
                                "d.jpg,7,2,gallery,\xe9"], "latin-1"), 1, "UTF-8"),
    ("decompression bomb", case_bomb_image, 1, "exceed the limit"),
    ("every query pid -1", case_features([-1, -1], [1, 2], [1, 2], [2, 1]), 1,
     "every query pid is -1"),
    ("every gallery pid -1", case_features([1, 2], [-1, -1], [1, 2], [2, 1]), 1,
     "every gallery pid is -1"),
    ("one camera", case_features([1, 2], [1, 2], [1, 1], [1, 1]), 1, "camera 1"),
    ("text file as features", case_text_as_features, 1, "not an .npz"),
    ("rerank of a small file", case_small_rerank, 2, "lower k1 to at most 4"),
    ("embed --mean nan", case_embed_contract("--size", "64x32", "--mean", "nan,0,0", "--std",
                                             "1,1,1"), 2, "finite"),
    ("embed --std inf", case_embed_contract("--size", "64x32", "--mean", "0,0,0", "--std",
                                            "inf,1,1"), 2, "finite"),
    ("ONNX without metadata at the wrong --size", case_onnx_at_wrong_size, 1, "inputs of shape"),
    ("embed: every image unreadable", case_embed_unreadable, 1, r"a\.jpg.*b\.png|b\.png.*a\.jpg"),
    ("checkpoint with a damaged recipe", case_corrupt_recipe_checkpoint, 1, "recipe is damaged"),
    ("export --out DIR", into_folder("export {run} --out {out}"), 2, "is a folder"),
    ("export sidecar is a folder", case_export_sidecar_is_folder, 2, "metadata.json: is a folder"),
    ("export --opset 99", command("export {run} --out {tmp}/m.onnx --opset 99", "{tmp}"), 2,
     "--opset 99: Input should be less than or equal"),
    ("export --opset 29", command("export {run} --out {tmp}/m.onnx --opset 29", "{tmp}"), 2,
     r"opset must be in 11\.\.\d+ \(torch.onnx's range\), got 29"),
    ("embed --out DIR", into_folder(f"embed {{run}} {QUERY_IMAGES} --out {{out}}"), 2,
     "is a folder"),
    ("eval --save-features DIR", into_folder("eval {run} --save-features {out}"), 2,
     "is a folder"),
    ("rerank --out DIR", into_folder("rerank {feats} --out {out} --k1 3 --k2 2"), 2,
     "is a folder"),
    ("search --out DIR", into_folder("search {index} {gallery} --out {out}"), 2, "is a folder"),
    ("bench --out DIR", into_folder("bench --model osnet_x0_25 --out {out}"), 2, "is a folder"),
    ("index build --overwrite --out DIR", into_folder("index build {gallery} --out {out} "
                                                      "--overwrite"), 2, "not a reid index"),
    ("index build --overwrite over a non-index", case_index_overwrite_foreign, 2,
     "not a reid index"),
    ("index build over an index", command("index build {gallery} --out {index}", "{index}"), 2,
     "--overwrite"),
    ("index remove of paths not all there", case_index_remove_missing, 1, "1 of the 3 paths"),
    ("bench --seconds 0", command("bench --model osnet_x0_25 --seconds 0"), 2, "--seconds 0"),
    ("bench --input 1x1", command("bench --model osnet_x0_25 --input 1x1"), 2, "at least 13x13"),
    ("truncated JPEG, --no-verify", case_truncated_image_no_verify, 1, r"cannot read image .*jpg"),
    # refusals of each verb, with the README's exit code (1 data, 2 usage)
    ("eval --split val without validation ids", command("eval {run} --split val"), 1,
     "no val_query/val_gallery images"),
    ("rerank of a missing file", command("rerank {tmp}/none.npz"), 1, "not found"),
    ("export of a missing run", command("export {tmp}/none --out {tmp}/m.onnx"), 1,
     "no such run folder"),
    ("train --resume without last.pt", command("train --resume --out {tmp}/run"), 2,
     "does not exist"),
    ("search --nprobe on a flat index", command("search {index} {gallery} --nprobe 4"), 2,
     "nprobe applies to ivfpq"),
    ("index info of a file that is not one", command("index info {recipe}"), 1,
     "not a readable reid index"),
    ("embed without images or dataset", command("embed {run} --out {tmp}/f.npz"), 2,
     "images/folders/lists"),
    ("index remove without paths or pid", command("index remove {index}"), 2,
     "--paths or --pid"),
    ("search --uri without --backend milvus", command("search {index} {gallery} --uri x.db"), 2,
     "--uri .* goes with --backend milvus"),
    ("calibrate --out DIR", into_folder("calibrate {feats} --out {out}"), 2, "is a folder"),
    ("calibrate features without pids", command("calibrate {gallery}"), 1, "no person ids"),
    ("calibrate --far 0", command("calibrate {feats} --far 0"), 2, r"\(0, 0\.1\]"),
    ("calibrate --far abc", command("calibrate {feats} --far abc"), 2, "--far: must be rates"),
    ("calibrate at an unmeasurable FAR", command("calibrate {feats} --far 0.0001"), 1,
     "smallest measurable FAR"),
    ("search --threshold far= without a calibration",
     command("search {index} {gallery} --threshold far=0.01"), 1, "needs a calibration"),
    ("search --threshold banana", command("search {index} {gallery} --threshold banana"), 2,
     "far=F"),
    ("index calibrate with a recipe", command("index calibrate {index} {recipe}", "{index}"), 1,
     "not a readable calibration"),
    ("eval --open-set withholding every identity",
     command("eval --features {feats} --open-set --unknown-ids 1000"), 1, "no known identity"),
    ("index add of rows already there", command("index add {index} {gallery}", "{index}"), 1,
     "25 of the 25 paths are already in"),
    ("index add of a folder that is not embed parts",
     command("index add {index} {data}", "{index}", "{data}"), 1, "parts.json"),
    ("index compact of a missing index", command("index compact {tmp}/none.idx"), 1,
     "no such index"),
    ("index rebuild of a flat index", command("index rebuild {index}", "{index}"), 1,
     "only IVF-PQ"),
    ("index upgrade of a recipe", command("index upgrade {recipe}", "{recipe}"), 1,
     "not a readable reid index"),
    ("index upgrade of an index folder", command("index upgrade {index}", "{index}"), 1,
     "already an index folder"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "code", "message"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_and_touches_nothing(base, tmp_path, name, make, code, message):
    args, watched = make(base, tmp_path)
    before = {str(p): digest(p) for p in watched}
    done = reid(*args)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, (done.returncode, done.stderr)
    if args[:2] == ["recipe", "validate"]:  # it reports each file on a line of its own
        errors = [line for line in done.stderr.splitlines() if line.startswith(args[2])]
    else:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert re.search(message, errors[0]), errors[0]
    assert {str(p): digest(p) for p in watched} == before
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert not leftovers


def test_search_topk_beyond_the_gallery_is_capped(base):
    done = reid("search", str(base["index"]), str(base["gallery"]), "--topk", "1000000000",
                "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert all(len(entry["hits"]) == 25 for entry in results)


def test_index_remove_matches_every_spelling_of_a_path(base, tmp_path):
    index = tmp_path / "g.idx"
    api.index_build(base["gallery"], index)
    listing = tmp_path / "erase.txt"
    absolute = Path.cwd() / "g" / "3.jpg"
    listing.write_text(f"./g/1.jpg\ng//2.jpg\n{absolute}\ng/x/../4.jpg\n")
    removed = api.index_remove(index, paths_file=listing).to_json()
    assert (removed["removed"], removed["count"]) == (4, 21)


def test_next_index_writer_removes_what_a_killed_write_left(base, tmp_path):
    index = tmp_path / "g.idx"
    api.index_build(base["gallery"], index)
    stale = tmp_path / ".g.idx.99999.tmp"  # a write killed before its rename
    stale.write_bytes(b"\0" * 1024)
    (tmp_path / ".g.idx.lock").write_text(json.dumps({"pid": 99999, "command": "reid index add"}))
    more = tmp_path / "more.npz"
    np.savez(more, features=np.ones((2, 8), np.float32), paths=np.array(["n/1.jpg", "n/2.jpg"]))
    done = reid("index", "add", str(index), str(more))
    assert done.returncode == 0, done.stderr
    assert not stale.exists() and "pid 99999" in done.stderr
    assert api.index_info(index).count == 27
