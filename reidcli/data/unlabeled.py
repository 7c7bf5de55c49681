"""Unlabeled crops (`reid prepare folder --unlabeled`): a train split without identities.

A camera network's own crops come without identities; `reid adapt` learns from them. A folder is
searched recursively (subfolders per camera or per day are common) and its images are listed in
path order; file and folder names are never parsed, so nothing a name says reaches a label. A
CSV with the header `path` or `path,camid` lists the crops instead and may give each its camera.
Every row has pid -1 and label -1; the camera is -1 where none is given.
"""

import csv
import os
from pathlib import Path

import pandas as pd

from reidcli.data.layouts import INT64_MAX, Scan, _missing_error, is_image_name
from reidcli.data.manifest import COLUMNS
from reidcli.errors import DatasetError

UNKNOWN = -1  # pid, label and camera of a crop nobody labeled


def parse_unlabeled(root: Path) -> Scan:
    """Every crop under `root` (a folder, searched recursively) or listed in `root` (a CSV).

    Raises:
        DatasetError: `root` is missing, holds no image, or the CSV is malformed or names
            missing files.
    """
    if root.is_file() and root.suffix.lower() == ".csv":
        return _parse_csv(root)
    if not root.is_dir():
        raise DatasetError(f"unlabeled crops: {root} is not a folder or a .csv file")
    scan = Scan(root=root)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            path = os.path.abspath(os.path.join(folder, name))
            if is_image_name(name):
                scan.records.append((path, UNKNOWN, UNKNOWN, "train"))
            else:
                scan.ignored.append(path)
    if not scan.records:
        raise DatasetError(f"no .jpg/.jpeg/.png images under {root}")
    scan.records.sort()
    return scan


def _parse_csv(csv_path: Path) -> Scan:
    scan = Scan(root=csv_path.parent.absolute())
    missing = []
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or set(reader.fieldnames) not in ({"path"}, {"path", "camid"}):
                raise DatasetError(
                    f"{csv_path}: expected the header path or path,camid, got {reader.fieldnames}"
                )
            for number, row in enumerate(reader, 2):
                path = Path(row["path"])
                path = path if path.is_absolute() else scan.root / path
                if not path.is_file():
                    missing.append(str(path))
                scan.records.append((str(path.absolute()), UNKNOWN, _camid(csv_path, number, row), "train"))
    except UnicodeDecodeError:
        raise DatasetError(f"{csv_path}: not UTF-8 text; save the CSV as UTF-8") from None
    except csv.Error as err:
        raise DatasetError(f"{csv_path}: not a readable CSV ({err})") from None
    if missing:
        raise _missing_error(csv_path, missing)
    if not scan.records:
        raise DatasetError(f"{csv_path}: lists no image")
    return scan


def _camid(csv_path: Path, number: int, row: dict) -> int:
    text = (row.get("camid") or "").strip()
    if not text:
        return UNKNOWN
    try:
        cam = int(text)
    except ValueError:
        raise DatasetError(f"{csv_path}:{number}: camid must be an integer, got {text!r}") from None
    if not 1 <= cam <= INT64_MAX:
        raise DatasetError(f"{csv_path}:{number}: camera {cam} must be >= 1 (or left empty)")
    return cam


def unlabeled_manifest(scan: Scan) -> pd.DataFrame:
    """The manifest of an unlabeled scan: every row in the train split with pid and label -1."""
    frame = pd.DataFrame(scan.records, columns=["path", "pid", "camid", "split"])
    frame["label"] = UNKNOWN
    return frame[list(COLUMNS)].astype({"pid": "int64", "label": "int64", "camid": "int64"})


def is_unlabeled(frame: pd.DataFrame) -> bool:
    """Whether a manifest's train split holds crops without identities."""
    train = frame[frame["split"] == "train"]
    return bool(len(train)) and bool((train["pid"] == UNKNOWN).all())
