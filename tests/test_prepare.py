"""`reid prepare`: rules, verification, zip input, atomic output, manifest loading, the CLI."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reidcli.data.layouts import get_layout
from reidcli.data.manifest import carve_validation, load_manifest, read_dataset_info
from reidcli.data.prepare import check_official
from reidcli.data.prepare import prepare as run_prepare
from reidcli.errors import DatasetError
from reidcli.recipe.options import PrepareOptions

ROOT = Path(__file__).resolve().parents[1]


def prepare(dataset: str, root: Path, out: Path, **options) -> dict:
    return run_prepare(dataset, PrepareOptions(root=str(root), out=str(out), **options))


def write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (8, 16), (i * 30 % 256, 60, 200)).save(folder / name)


def market(root: Path) -> Path:
    write_images(
        root / "bounding_box_train",
        ["0009_c1s1_01.jpg", "0009_c2s1_02.jpg", "0003_c1s1_01.jpg", "0003_c3s1_01.jpg.jpg"],
    )
    write_images(root / "query", ["0005_c1s1_01.jpg", "0006_c2s1_01.jpg.jpg"])
    write_images(
        root / "bounding_box_test",
        ["0005_c2s1_02.jpg", "0006_c1s1_02.jpg", "-1_c1s1_03.jpg", "0000_c4s1_04.jpg"],
    )
    return root


def test_rules_junk_distractors_labels(tmp_path):
    info = prepare("market1501", market(tmp_path / "src"), tmp_path / "out")
    df = load_manifest(tmp_path / "out")
    assert list(df.columns) == ["path", "pid", "label", "camid", "split"]
    assert str(df.pid.dtype) == str(df.label.dtype) == str(df.camid.dtype) == "int64"
    assert -1 not in set(df.pid)
    assert set(df[df.pid == 0].split) == {"gallery"}
    train = df[df.split == "train"]
    assert dict(zip(train.pid, train.label, strict=True)) == {3: 0, 9: 1}  # sorted by pid
    assert set(df[df.split != "train"].label) == {-1}
    assert info["junk_dropped"] == 1 and info["distractors_kept"] == 1
    assert info["splits"]["gallery"] == {"images": 3, "identities": 3, "cameras": 3}
    assert info["official"]["status"] == "partial"
    assert read_dataset_info(tmp_path / "out") == info


def corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])  # a truncated JPEG


def test_corrupt_image_skipped_or_fatal_with_strict(tmp_path):
    src = market(tmp_path / "src")
    corrupt(src / "bounding_box_train" / "0009_c2s1_02.jpg")
    (src / "query" / "0006_c3s1_09.jpg").write_text("not an image")
    with pytest.raises(DatasetError, match=r"2 images cannot be decoded: .*0006_c3s1_09\.jpg"):
        prepare("market1501", src, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict" / "manifest.csv").exists()
    info = prepare("market1501", src, tmp_path / "out")
    assert {Path(c["path"]).name for c in info["corrupt_skipped"]} == {
        "0009_c2s1_02.jpg",
        "0006_c3s1_09.jpg",
    }
    assert info["splits"]["train"]["images"] == 3
    unverified = prepare("market1501", src, tmp_path / "fast", verify=False)
    assert unverified["splits"]["train"]["images"] == 4


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("0005_c2s1_02.jpg", r"1 query identities have no gallery image: 5"),
        ("0006_c1s1_02.jpg", r"no gallery image: 6"),
    ],
)
def test_query_without_gallery(tmp_path, name, message):
    src = market(tmp_path / "src")
    (src / "bounding_box_test" / name).unlink()
    with pytest.raises(DatasetError, match=message):
        prepare("market1501", src, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_query_without_cross_camera_match(tmp_path):
    src = market(tmp_path / "src")
    (src / "bounding_box_test" / "0005_c2s1_02.jpg").rename(
        src / "bounding_box_test" / "0005_c1s1_02.jpg"
    )
    with pytest.raises(DatasetError, match=r"without a gallery match from another camera: 5$"):
        prepare("market1501", src, tmp_path / "out")


def test_zip_release_is_extracted_inside_out(tmp_path):
    src = market(tmp_path / "src" / "Market-1501-v15.09.15")
    archive = tmp_path / "Market-1501-v15.09.15.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in src.rglob("*.jpg*"):
            zf.write(path, path.relative_to(src.parent))
    out = tmp_path / "out"
    info = prepare("market1501", archive, out)
    df = load_manifest(out)
    assert all(p.startswith(str(out / "source")) for p in df.path)
    assert info["splits"]["train"]["images"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Market-1501-v15.09.15.zip", "out", "src"]


def test_zip_escaping_members_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Market-1501-v15.09.15/query/0001_c1s1_01.jpg", b"x")
        zf.writestr("../../escaped.txt", b"x")
    with pytest.raises(DatasetError, match=r"refusing .*evil\.zip: 1 members .*escaped\.txt"):
        prepare("market1501", archive, tmp_path / "a" / "out")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_zip_bomb_refused_before_writing(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Market-1501-v15.09.15/query/0001_c1s1_01.jpg", b"x")
        zf.writestr("Market-1501-v15.09.15/zeros.bin", bytes(64 << 20))  # 64 MiB -> ~64 KiB
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(DatasetError, match=r"refusing .*bomb\.zip: 1 members expand more than"):
        prepare("market1501", archive, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*"))  # nothing extracted


def test_zip_larger_than_free_space_refused(tmp_path, monkeypatch):
    import shutil

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Market-1501-v15.09.15/query/0001_c1s1_01.jpg", bytes(4096))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1000))
    with pytest.raises(DatasetError, match=r"expands to 0\.00 GiB but .* has 0\.00 GiB free"):
        prepare("market1501", archive, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*"))


def test_failed_run_keeps_previous_manifest_intact(tmp_path):
    src = market(tmp_path / "src")
    out = tmp_path / "out"
    prepare("market1501", src, out)
    before = (out / "manifest.csv").read_bytes()
    write_images(src / "query", ["garbage.jpg"])
    with pytest.raises(DatasetError, match=r"garbage\.jpg"):
        prepare("market1501", src, out, overwrite=True)
    assert (out / "manifest.csv").read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "dataset.json",
        "manifest.csv",
    ]


def manifest_frame(cams_per_id: dict[int, list[int]]) -> pd.DataFrame:
    rows = [
        (f"/x/{pid:04d}_c{cam}_{i}.jpg", pid, -1, cam, "train")
        for pid, cams in cams_per_id.items()
        for i, cam in enumerate(cams)
    ]
    rows.append(("/x/0099_c1_0.jpg", 99, -1, 1, "query"))
    return pd.DataFrame(rows, columns=["path", "pid", "label", "camid", "split"])


def test_carve_validation_rules():
    ids = {pid: [1, 1, 2, 2, 3] for pid in range(10, 20)}
    ids[30] = [1, 2, 3, 4]  # no camera with two images: never drawn
    df = carve_validation(manifest_frame(ids), 4, seed=7)
    moved = sorted(df[df.split.str.startswith("val")].pid.unique())
    assert len(moved) == 4 and 30 not in moved
    q = df[df.split == "val_query"]
    assert len(q) == 12 and not q.duplicated(["pid", "camid"]).any()
    assert len(df[df.split == "val_gallery"]) == 8
    train = df[df.split == "train"]
    assert np.array_equal(
        train.drop_duplicates("pid").sort_values("pid").label, np.arange(train.pid.nunique())
    )
    assert set(df[df.split != "train"].label) == {-1}
    again = carve_validation(manifest_frame(ids), 4, seed=7)
    assert again.equals(df)
    assert not carve_validation(manifest_frame(ids), 4, seed=8).equals(df)


@pytest.mark.parametrize(("n", "message"), [(11, "only 10 of 12"), (12, "at least one must stay")])
def test_carve_validation_too_many(n, message):
    ids = {pid: [1, 1, 2, 2] for pid in range(10)} | {50: [1, 2], 51: [3]}
    with pytest.raises(DatasetError, match=message):
        carve_validation(manifest_frame(ids), n, seed=0)


def test_load_manifest_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found; run `reid prepare"):
        load_manifest(tmp_path / "missing")
    out = tmp_path / "out"
    prepare("market1501", market(tmp_path / "src"), out)
    (tmp_path / "src" / "query" / "0005_c1s1_01.jpg").unlink()
    with pytest.raises(
        DatasetError, match=r"1 of 9 images listed .* missing .*re-run `reid prepare`"
    ):
        load_manifest(out)
    pd.DataFrame({"path": ["a"], "pid": [1]}).to_csv(out / "other.csv", index=False)
    with pytest.raises(DatasetError, match="expected columns path,pid,label,camid,split"):
        load_manifest(out, "other.csv")


def test_official_statistics_check():
    layout = get_layout("market1501")
    full = {"train": (12936, 751), "query": (3368, 750), "gallery": (15913, 751)}
    stats = {s: {"images": i, "identities": n} for s, (i, n) in full.items()}
    assert check_official(layout, stats)["status"] == "complete"
    stats["gallery"]["images"] = 15914
    result = check_official(layout, stats)
    assert result["status"] == "mismatch" and "gallery 15,914 of 15,913 images" in result["message"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys; from reidcli.cli import main; sys.argv = ['reid', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\nsys.exit(code)\n"
    )
    cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)


def test_cli_json_without_torch(tmp_path):
    src = market(tmp_path / "src")
    out = run_cli("prepare", "market1501", "--root", str(src), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["splits"]["query"]["images"] == 2
    assert "partial copy of Market-1501" in out.stderr
    assert (tmp_path / "data" / "market1501" / "manifest.csv").is_file()


def test_cli_missing_root_is_a_message_not_a_traceback(tmp_path):
    out = run_cli("prepare", "dukemtmc", cwd=tmp_path)
    assert out.returncode == 1
    assert "DukeMTMC-reID not found" in out.stderr and "data/raw/dukemtmc" in out.stderr
    assert "Traceback" not in out.stderr


def test_real_market1501_subset(shared_dir, tmp_path):
    info = prepare("market1501", shared_dir / "data" / "market1501_subset", tmp_path / "out")
    splits = info["splits"]
    assert (splits["train"]["images"], splits["train"]["identities"]) == (5112, 300)
    assert (splits["query"]["images"], splits["query"]["identities"]) == (1344, 300)
    assert splits["gallery"]["images"] == 7892 - 1563
    assert info["junk_dropped"] == 1563 and info["distractors_kept"] == 1084
    assert info["official"]["status"] == "partial"
