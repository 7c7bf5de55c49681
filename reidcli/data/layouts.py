"""Dataset layouts: one parser per dataset and the explicit name table `LAYOUTS`.

A parser receives the folder the user named (`--root`) and returns a `Scan`: every image with its
original person id, camera and split (`train`, `query`, `gallery`), junk included. Dropping junk,
relabelling and checking are the manifest's job, so that every layout obeys the same rules.
"""

import csv
import difflib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reidcli.errors import DatasetError

NAME_RE = re.compile(r"^(-?\d+)_c(\d+)")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
FOLDER_SPLITS = {"train": "train", "query": "query", "gallery": "gallery"}
SHOWN = 5  # offending file names quoted in an error message
INT64_MAX = 2**63 - 1


@dataclass
class Scan:
    """What a parser found.

    Attributes:
        root: the folder the dataset was read from (after looking into known child folders).
        records: (absolute path, pid, camid, split) per image, junk included.
        ignored: files in split folders that are not images (e.g. `Thumbs.db`), skipped.
    """

    root: Path
    records: list[tuple[str, int, int, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    """One dataset: how to find and parse it, and its official statistics.

    Attributes:
        name: stable dataset name (as in recipes).
        title: human-readable name.
        parse: `parse(root) -> Scan`.
        cameras: number of cameras (camera numbers run 1..cameras); None when not fixed.
        source: where the dataset can be obtained.
        official: split -> (images, identities) of a complete copy, junk dropped.
    """

    name: str
    title: str
    parse: Callable[[Path], Scan]
    cameras: int | None
    source: str
    official: dict[str, tuple[int, int]] | None = None


def is_image_name(name: str) -> bool:
    """Whether a file name has an image suffix (`.jpg.jpg` counts, as in Market-1501)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def _quote(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f", ... ({len(items)} in all)" if len(items) > SHOWN else "")


def _missing_error(list_path: Path, missing: list[str]) -> DatasetError:
    return DatasetError(
        f"{len(missing)} images listed in {list_path} are missing: {_quote(missing)}"
    )


def scan_folder(folder: Path, split: str, cameras: int | None, scan: Scan) -> None:
    """Parse one split folder of `PID_cCAM_*` images into `scan`.

    Args:
        folder: the split folder.
        split: train, query or gallery.
        cameras: highest valid camera number, or None for any camera >= 1.
        scan: receives records and ignored files.

    Raises:
        DatasetError: the folder is missing or empty, a name does not parse, a camera is out of
            range.
    """
    if not folder.is_dir():
        raise DatasetError(f"missing split folder {folder} (the {split} split)")
    found, bad_names, bad_cams = [], [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.is_file() or entry.name.startswith("."):
                continue
            if not is_image_name(entry.name):
                scan.ignored.append(entry.path)
                continue
            match = NAME_RE.match(entry.name)
            if match is None:
                bad_names.append(entry.name)
                continue
            pid, cam = int(match.group(1)), int(match.group(2))
            if cam < 1 or (cameras is not None and cam > cameras) or cam > INT64_MAX:
                bad_cams.append(entry.name)
                continue
            if id_problem(pid, cam):
                bad_names.append(entry.name)
                continue
            found.append((os.path.abspath(entry.path), pid, cam, split))
    if bad_names:
        raise DatasetError(
            f"{len(bad_names)} image names in {folder} do not match PID_cCAM_... with a pid of "
            f"-1 or more (e.g. 0002_c1s1_000451_03.jpg): {_quote(sorted(bad_names))}"
        )
    if bad_cams:
        allowed = f"1..{cameras}" if cameras else ">= 1"
        raise DatasetError(
            f"{len(bad_cams)} images in {folder} have a camera outside {allowed}: "
            f"{_quote(sorted(bad_cams))}"
        )
    if not found:
        raise DatasetError(f"empty split folder {folder}: no .jpg/.jpeg/.png images")
    scan.records.extend(sorted(found))


def find_dataset_dir(root: Path, children: tuple[str, ...], marker: str, layout: "Layout") -> Path:
    """The first of `root` and `root/child` that holds `marker`; a clear error otherwise."""
    candidates = [root] + [root / child for child in children]
    for candidate in candidates:
        if (candidate / marker).exists():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    if not root.exists():
        raise DatasetError(
            f"{layout.title} not found: {root} does not exist (looked for {marker} in {looked}). "
            f"Obtain it from {layout.source} and pass its folder with --root."
        )
    raise DatasetError(
        f"{layout.title} not found under {root}: no {marker} in {looked}. "
        f"Obtain it from {layout.source} and pass its folder with --root."
    )


def parse_market_folders(root: Path, cameras: int | None) -> Scan:
    """Parse `bounding_box_train/ query/ bounding_box_test/` directly under `root`."""
    scan = Scan(root=root)
    for split, folder in MARKET_FOLDERS.items():
        scan_folder(root / folder, split, cameras, scan)
    return scan


def parse_market1501(root: Path) -> Scan:
    """Market-1501: the release folder or its `Market-1501-v15.09.15` child."""
    base = find_dataset_dir(
        root, ("Market-1501-v15.09.15",), MARKET_FOLDERS["train"], LAYOUTS["market1501"]
    )
    return parse_market_folders(base, 6)


def parse_dukemtmc(root: Path) -> Scan:
    """DukeMTMC-reID: the release folder or its `DukeMTMC-reID` child."""
    base = find_dataset_dir(root, ("DukeMTMC-reID",), MARKET_FOLDERS["train"], LAYOUTS["dukemtmc"])
    return parse_market_folders(base, 8)


def _parse_cuhk03(kind: str) -> Callable[[Path], Scan]:
    def parse(root: Path) -> Scan:
        children = (kind, f"cuhk03-np/{kind}", f"CUHK03-NP/{kind}")
        layout = LAYOUTS[f"cuhk03-np-{kind}"]
        base = find_dataset_dir(root, children, MARKET_FOLDERS["train"], layout)
        return parse_market_folders(base, 2)

    parse.__doc__ = f"CUHK03-NP {kind} (767/700): `cuhk03-np/{kind}/` with Market-style folders."
    return parse


MSMT_LISTS = {"train": "list_train.txt", "val": "list_val.txt"}
MSMT_LISTS.update(query="list_query.txt", gallery="list_gallery.txt")
MSMT_IMAGE_DIRS = (("train", "test"), ("mask_train_v2", "mask_test_v2"))


def _read_msmt_list(list_path: Path, image_dir: Path, split: str, scan: Scan) -> None:
    """Read `REL/PATH.jpg PID` lines; the camera is the third `_` field of the name (01..15)."""
    if not list_path.is_file():
        raise DatasetError(f"missing list file {list_path} (the {split} split)")
    missing, found = [], []
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DatasetError(f"{list_path}: not UTF-8 text") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        fields = Path(parts[0]).name.split("_")
        if len(parts) != 2 or len(fields) < 3 or not (parts[1] + fields[2]).lstrip("-").isdecimal():
            expected = "'DIR/PID_N_CAM_....jpg PID'"
            raise DatasetError(f"{list_path}:{number}: expected {expected}, got {line!r}")
        cam = int(fields[2])
        if not 1 <= cam <= 15:
            raise DatasetError(f"{list_path}:{number}: camera {cam} outside 1..15 in {parts[0]}")
        problem = id_problem(int(parts[1]), cam)
        if problem:
            raise DatasetError(f"{list_path}:{number}: {problem}")
        path = image_dir / parts[0]
        if not path.is_file():
            missing.append(str(path))
        found.append((str(path.absolute()), int(parts[1]), cam, split))
    if missing:
        raise _missing_error(list_path, missing)
    if not found:
        raise DatasetError(f"empty list file {list_path}")
    scan.records.extend(found)


def parse_msmt17(root: Path) -> Scan:
    """MSMT17 v1/v2 with list files (train = list_train + list_val), or Market-style folders."""
    children = ("MSMT17_V1", "MSMT17_V2", "MSMT17")
    layout = LAYOUTS["msmt17"]
    for candidate in [root] + [root / child for child in children]:
        if (candidate / MARKET_FOLDERS["train"]).is_dir():
            return parse_market_folders(candidate, 15)
    base = find_dataset_dir(root, children, MSMT_LISTS["train"], layout)
    dirs = next((d for d in MSMT_IMAGE_DIRS if (base / d[0]).is_dir()), None)
    if dirs is None:
        raise DatasetError(f"missing image folder train/ or mask_train_v2/ in {base}")
    scan = Scan(root=base)
    for key, list_name in MSMT_LISTS.items():
        image_dir = base / (dirs[0] if key in ("train", "val") else dirs[1])
        split = "train" if key == "val" else key
        _read_msmt_list(base / list_name, image_dir, split, scan)
    return scan


def parse_folder(root: Path) -> Scan:
    """A custom dataset: `train/ query/ gallery/` of `PID_cCAM_*` images, or a CSV file."""
    if root.is_file() and root.suffix.lower() == ".csv":
        return parse_csv(root)
    base = find_dataset_dir(root, (), FOLDER_SPLITS["train"], LAYOUTS["folder"])
    scan = Scan(root=base)
    for split, folder in FOLDER_SPLITS.items():
        scan_folder(base / folder, split, None, scan)
    return scan


def parse_csv(csv_path: Path) -> Scan:
    """A CSV with columns `path,pid,camid,split`; relative paths are relative to the CSV.

    The file is UTF-8 text (a byte-order mark is allowed).
    """
    scan = Scan(root=csv_path.parent.absolute())
    missing = []
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            for number, row in _csv_rows(csv_path, handle):
                pid, cam = _csv_ids(csv_path, number, row)
                path = Path(row["path"])
                path = path if path.is_absolute() else scan.root / path
                if not path.is_file():
                    missing.append(str(path))
                scan.records.append((str(path.absolute()), pid, cam, row["split"]))
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"{csv_path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
            f"{err.start} of a block); save the CSV as UTF-8"
        ) from None
    except csv.Error as err:
        raise DatasetError(f"{csv_path}: not a readable CSV ({err})") from None
    if missing:
        raise _missing_error(csv_path, missing)
    for split in FOLDER_SPLITS:
        if not any(record[3] == split for record in scan.records):
            raise DatasetError(f"{csv_path}: the {split} split is empty")
    return scan


def _csv_rows(csv_path: Path, handle):
    reader = csv.DictReader(handle)
    if reader.fieldnames is None or set(reader.fieldnames) != {"path", "pid", "camid", "split"}:
        raise DatasetError(
            f"{csv_path}: expected the header path,pid,camid,split, got {reader.fieldnames}"
        )
    yield from enumerate(reader, 2)


def _csv_ids(csv_path: Path, number: int, row: dict) -> tuple[int, int]:
    """The row's pid and camera, checked: integers, pid >= -1, camera >= 1, both int64."""
    try:
        pid, cam = int(row["pid"]), int(row["camid"])
    except (TypeError, ValueError):
        raise DatasetError(f"{csv_path}:{number}: pid and camid must be integers") from None
    if row["split"] not in FOLDER_SPLITS:
        raise DatasetError(
            f"{csv_path}:{number}: split must be train, query or gallery, got {row['split']!r}"
        )
    problem = id_problem(pid, cam)
    if problem:
        raise DatasetError(f"{csv_path}:{number}: {problem}")
    return pid, cam


def id_problem(pid: int, cam: int) -> str | None:
    """Why a (pid, camera) pair cannot be used: pid -1 is junk, 0 a distractor, others persons;
    cameras count from 1; both must fit in 64 bits."""
    if not -1 <= pid <= INT64_MAX:
        return f"pid {pid} must be -1 (junk), 0 (distractor) or a person id up to {INT64_MAX}"
    if not 1 <= cam <= INT64_MAX:
        return f"camera {cam} must be >= 1 (and at most {INT64_MAX})"
    return None


def parse_synthetic(root: Path) -> Scan:
    """The generated dataset: Market-style folders (cameras checked against its own count)."""
    return parse_market_folders(root, None)


_MARKET_URL = "the authors' project page (Zheng et al., ICCV 2015; release Market-1501-v15.09.15)"
_CUHK_URL = "https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP"

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            "market1501",
            "Market-1501",
            parse_market1501,
            6,
            _MARKET_URL,
            {"train": (12936, 751), "query": (3368, 750), "gallery": (15913, 751)},
        ),
        Layout(
            "dukemtmc",
            "DukeMTMC-reID",
            parse_dukemtmc,
            8,
            "https://github.com/layumi/DukeMTMC-reID_evaluation",
            {"train": (16522, 702), "query": (2228, 702), "gallery": (17661, 1110)},
        ),
        Layout(
            "cuhk03-np-labeled",
            "CUHK03-NP labeled",
            _parse_cuhk03("labeled"),
            2,
            _CUHK_URL,
            {"train": (7368, 767), "query": (1400, 700), "gallery": (5328, 700)},
        ),
        Layout(
            "cuhk03-np-detected",
            "CUHK03-NP detected",
            _parse_cuhk03("detected"),
            2,
            _CUHK_URL,
            {"train": (7365, 767), "query": (1400, 700), "gallery": (5332, 700)},
        ),
        Layout(
            "msmt17",
            "MSMT17",
            parse_msmt17,
            15,
            "http://www.pkuvmc.com/publications/msmt17.html",
            {"train": (32621, 1041), "query": (11659, 3060), "gallery": (82161, 3060)},
        ),
        Layout("folder", "custom dataset", parse_folder, None, "your own images"),
        Layout("synthetic", "synthetic dataset", parse_synthetic, None, "`reid prepare synthetic`"),
    )
}


def get_layout(name: str) -> Layout:
    """Look up a dataset layout by name; an unknown name lists the choices and the closest."""
    if name in LAYOUTS:
        return LAYOUTS[name]
    close = difflib.get_close_matches(name, LAYOUTS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise DatasetError(f"unknown dataset {name!r}{hint} (choices: {', '.join(LAYOUTS)})")
