"""Dataset layouts on tiny folders laid out like the original releases."""

from pathlib import Path

import pytest
from PIL import Image

from reidcli.data.layouts import LAYOUTS, get_layout, parse_csv
from reidcli.errors import DatasetError
from reidcli.recipe.data import DATASETS


def write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (8, 16), (i * 40 % 256, 90, 140)).save(folder / name)


MARKET = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s3_1.jpg"],
    "query": ["0001_c1s1_001051_00.jpg", "1488_c1s6_023021_02.jpg.jpg"],
    "bounding_box_test": [
        "0001_c2s1_000001_01.jpg",
        "1488_c3s6_023021_01.jpg.jpg",
        "-1_c1s1_000401_03.jpg",
        "0000_c6s1_002101_07.jpg",
    ],
}


def market_tree(root: Path, files: dict = MARKET) -> Path:
    for folder, names in files.items():
        write_images(root / folder, names)
    return root


def records_by_split(scan) -> dict[str, list[tuple[str, int, int]]]:
    out: dict = {}
    for path, pid, cam, split in scan.records:
        out.setdefault(split, []).append((Path(path).name, pid, cam))
    return out


def test_name_table_matches_recipe_schema():
    assert tuple(LAYOUTS) == DATASETS


def test_unknown_name_suggests_closest():
    with pytest.raises(DatasetError, match="did you mean 'market1501'"):
        get_layout("market1510")


@pytest.mark.parametrize("child", ["", "Market-1501-v15.09.15"])
def test_market1501_parses_jpg_jpg_junk_and_distractors(tmp_path, child):
    market_tree(tmp_path / child if child else tmp_path)
    scan = get_layout("market1501").parse(tmp_path)
    got = records_by_split(scan)
    assert ("1488_c1s6_023021_02.jpg.jpg", 1488, 1) in got["query"]
    assert ("-1_c1s1_000401_03.jpg", -1, 1) in got["gallery"]
    assert ("0000_c6s1_002101_07.jpg", 0, 6) in got["gallery"]
    assert ("0007_c3s3_1.jpg", 7, 3) in got["train"]
    assert all(Path(path).is_absolute() for path, *_ in scan.records)
    assert len(scan.records) == 9


def test_non_image_files_are_ignored_and_reported(tmp_path):
    market_tree(tmp_path)
    (tmp_path / "bounding_box_train" / "Thumbs.db").write_bytes(b"\0\1")
    scan = get_layout("market1501").parse(tmp_path)
    assert [Path(p).name for p in scan.ignored] == ["Thumbs.db"]


def test_dukemtmc_in_its_release_folder(tmp_path):
    files = {k: [n.replace("c6", "c8") for n in v] for k, v in MARKET.items()}
    market_tree(tmp_path / "DukeMTMC-reID", files)
    scan = get_layout("dukemtmc").parse(tmp_path)
    assert ("0000_c8s1_002101_07.jpg", 0, 8) in records_by_split(scan)["gallery"]


@pytest.mark.parametrize("kind", ["labeled", "detected"])
def test_cuhk03_np_png_folders(tmp_path, kind):
    files = {
        "bounding_box_train": ["0001_c1_1.png", "0001_c2_6.png"],
        "query": ["0003_c1_1.png"],
        "bounding_box_test": ["0003_c2_7.png"],
    }
    market_tree(tmp_path / "cuhk03-np" / kind, files)
    market_tree(tmp_path / "cuhk03-np" / ("detected" if kind == "labeled" else "labeled"), {})
    scan = get_layout(f"cuhk03-np-{kind}").parse(tmp_path)
    assert scan.root == tmp_path / "cuhk03-np" / kind
    assert records_by_split(scan)["query"] == [("0003_c1_1.png", 3, 1)]


def test_cuhk03_camera_out_of_range(tmp_path):
    files = {"bounding_box_train": ["0001_c3_1.png"], "query": ["1_c1_1.png"]}
    market_tree(tmp_path / "labeled", files | {"bounding_box_test": ["1_c2_1.png"]})
    with pytest.raises(DatasetError, match=r"camera outside 1\.\.2: 0001_c3_1\.png"):
        get_layout("cuhk03-np-labeled").parse(tmp_path)


def msmt_tree(base: Path, train_dir: str, test_dir: str) -> None:
    lists = {
        "list_train.txt": (train_dir, ["0000/0000_000_01_0303morning_0015_0.jpg 0"]),
        "list_val.txt": (train_dir, ["0001/0001_003_14_0303noon_0100_1.jpg 1"]),
        "list_query.txt": (test_dir, ["0005/0005_001_15_0303morning_0200_0.jpg 5"]),
        "list_gallery.txt": (test_dir, ["0005/0005_002_02_0303afternoon_0300_0.jpg 5"]),
    }
    for list_name, (folder, lines) in lists.items():
        for line in lines:
            rel = line.split()[0]
            write_images(base / folder / Path(rel).parent, [Path(rel).name])
        (base / list_name).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("release", "dirs"),
    [("MSMT17_V1", ("train", "test")), ("MSMT17_V2", ("mask_train_v2", "mask_test_v2"))],
)
def test_msmt17_list_files_with_two_digit_cameras(tmp_path, release, dirs):
    msmt_tree(tmp_path / release, *dirs)
    got = records_by_split(get_layout("msmt17").parse(tmp_path))
    # list_val joins the training split, as the official 32,621 training images do
    assert sorted(pid for _, pid, _ in got["train"]) == [0, 1]
    assert got["train"][1][2] == 14
    assert got["query"] == [("0005_001_15_0303morning_0200_0.jpg", 5, 15)]


def test_msmt17_market_style_folders_two_digit_cameras(tmp_path):
    files = {
        "bounding_box_train": ["0001_c14_0001.jpg"],
        "query": ["0002_c15_0001.jpg"],
        "bounding_box_test": ["0002_c11_0003.jpg"],
    }
    market_tree(tmp_path, files)
    got = records_by_split(get_layout("msmt17").parse(tmp_path))
    assert got["train"] == [("0001_c14_0001.jpg", 1, 14)]
    assert got["gallery"] == [("0002_c11_0003.jpg", 2, 11)]


def test_msmt17_missing_listed_image(tmp_path):
    msmt_tree(tmp_path, "train", "test")
    (tmp_path / "test" / "0005" / "0005_001_15_0303morning_0200_0.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 images listed in .*list_query\.txt are missing"):
        get_layout("msmt17").parse(tmp_path)


def test_folder_layout_jpeg_and_png(tmp_path):
    write_images(tmp_path / "train", ["3_c1_a.jpg", "3_c2_b.png"])
    write_images(tmp_path / "query", ["12_c1_x.jpeg"])
    write_images(tmp_path / "gallery", ["12_c2_y.png"])
    got = records_by_split(get_layout("folder").parse(tmp_path))
    assert got["train"] == [("3_c1_a.jpg", 3, 1), ("3_c2_b.png", 3, 2)]
    assert got["query"] == [("12_c1_x.jpeg", 12, 1)]


def test_folder_csv(tmp_path):
    write_images(tmp_path / "imgs", ["a.jpg", "b.png", "c.jpg"])
    rows = (
        "path,pid,camid,split\nimgs/a.jpg,4,1,train\nimgs/b.png,9,1,query\nimgs/c.jpg,9,2,gallery\n"
    )
    (tmp_path / "data.csv").write_text(rows)
    scan = get_layout("folder").parse(tmp_path / "data.csv")
    assert records_by_split(scan) == {
        "train": [("a.jpg", 4, 1)],
        "query": [("b.png", 9, 1)],
        "gallery": [("c.jpg", 9, 2)],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,pid,split\n", "expected the header path,pid,camid,split"),
        ("path,pid,camid,split\nimgs/a.jpg,x,1,train\n", r"data.csv:2: pid and camid must be"),
        ("path,pid,camid,split\nimgs/a.jpg,1,1,test\n", "split must be train, query or gallery"),
        (
            "path,pid,camid,split\nimgs/zz.jpg,1,1,train\n",
            r"1 images listed in .*missing: .*zz.jpg",
        ),
        ("path,pid,camid,split\nimgs/a.jpg,1,1,train\n", "the query split is empty"),
    ],
)
def test_folder_csv_errors(tmp_path, text, message):
    write_images(tmp_path / "imgs", ["a.jpg"])
    (tmp_path / "data.csv").write_text(text)
    with pytest.raises(DatasetError, match=message):
        parse_csv(tmp_path / "data.csv")


def test_missing_root_says_where_it_looked_and_where_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as err:
        get_layout("cuhk03-np-detected").parse(tmp_path / "nope")
    text = str(err.value)
    assert "does not exist" in text and str(tmp_path / "nope" / "cuhk03-np" / "detected") in text
    assert "person-re-ranking" in text


def test_root_without_dataset(tmp_path):
    with pytest.raises(
        DatasetError, match=r"Market-1501 not found under .*Market-1501-v15\.09\.15"
    ):
        get_layout("market1501").parse(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: [p.unlink() for p in (r / "query").iterdir()], r"empty split folder .*query"),
        (lambda r: [p.unlink() for p in (r / "query").iterdir()] and (r / "query").rmdir(),
         r"missing split folder .*query"),
        (lambda r: write_images(r / "query", ["person7_c1.jpg"]), r"not match PID_cCAM_.*person7"),
        (lambda r: write_images(r / "query", ["0001_c7s1_1.jpg"]), r"outside 1\.\.6: 0001_c7"),
    ],
)  # fmt: skip
def test_bad_market_folders(tmp_path, change, message):
    market_tree(tmp_path)
    change(tmp_path)
    with pytest.raises(DatasetError, match=message):
        get_layout("market1501").parse(tmp_path)
