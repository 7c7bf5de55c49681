"""Features files and image queries as gallery rows."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from reidcli.errors import FeaturesError, GalleryIndexError
from reidcli.index.gallery import METRICS, UNKNOWN, Rows

log = logging.getLogger(__name__)


def stated_distance(arrays: dict, path: str | Path) -> str | None:
    """The distance a features file states (`reid embed` writes its checkpoint's), or None.

    Raises:
        FeaturesError: an unknown distance.
    """
    distance = str(arrays["distance"]) if "distance" in arrays else None
    if distance is not None and distance not in METRICS:
        raise FeaturesError(f"{path}: unknown distance {distance!r}")
    return distance


def load_rows(path: str | Path, side: str) -> tuple[Rows, str | None]:
    """Rows of a `reid embed` file (`features`, `paths`, optional `pids`, `camids`,
    `distance`) or one side ("query"/"gallery") of a `reid eval --features` file.

    Returns:
        The rows and the distance the file states (None when it states none).

    Raises:
        FeaturesError: a missing, unreadable, empty or malformed file.
    """
    from reidcli.metrics.features import check_rows, read_npz, validate_features

    path = Path(path)
    arrays = read_npz(path)
    distance = stated_distance(arrays, path)
    if "features" in arrays:  # a `reid embed` file: labels are optional
        prefix = ""
        feats = arrays["features"]
        n = feats.shape[0] if feats.ndim == 2 else 0
        for key in ("pids", "camids"):
            arrays.setdefault(key, np.full(n, UNKNOWN, np.int64))
        check_rows(arrays, prefix, str(path))
    elif f"{side}_features" in arrays:
        prefix = f"{side}_"
        arrays = vars(validate_features(arrays, str(path)))
    else:
        raise FeaturesError(
            f"{path}: no `features` (a `reid embed` file) nor `{side}_features` (a `reid eval "
            "--features` file)"
        )
    feats = arrays[f"{prefix}features"]
    paths = arrays.get(f"{prefix}paths")
    if paths is None:
        paths = np.asarray([f"{path.name}:{i}" for i in range(len(feats))], dtype=object)
    paths = np.asarray(paths, dtype=str).astype(object)
    return Rows(feats, paths, arrays[f"{prefix}pids"], arrays[f"{prefix}camids"]), distance


def check_same_model(indexed: str | None, given: str | None, source: str, index) -> None:
    """Refuse features of another checkpoint than the index's, where both are recorded.

    Raises:
        GalleryIndexError: the checkpoints differ.
    """
    if indexed and given and indexed != given:
        raise GalleryIndexError(
            f"{source}: features of checkpoint {given[:12]}, but {index} holds features of "
            f"checkpoint {indexed[:12]}: distances between two models mean nothing"
        )


PARTS = "parts.json"


def feature_sources(path: str | Path) -> list[Path]:
    """A features file, or the part files of a folder that a sharded `reid embed` wrote (in
    rank order, as its `parts.json` lists them).

    Raises:
        FeaturesError: a folder without a complete `parts.json` (an unfinished sharded embed), or
            one whose listed parts are missing.
    """
    import json

    path = Path(path)
    if not path.is_dir():
        return [path]
    listing = path / PARTS
    if not listing.is_file():
        raise FeaturesError(
            f"{path}: a folder without {PARTS}: not the output of a sharded reid embed, or one "
            "that has not finished"
        )
    try:
        parts = [path / name for name in json.loads(listing.read_text(encoding="utf-8"))["parts"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FeaturesError(f"{listing}: unreadable ({err})") from None
    missing = [p.name for p in parts if not p.is_file()]
    if missing or not parts:
        raise FeaturesError(f"{listing}: lists parts that are missing: {', '.join(missing)}")
    return parts
