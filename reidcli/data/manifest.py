"""The prepared-dataset manifest: `manifest.csv` (one row per image) and `dataset.json`.

Columns: `path` (absolute), `pid` (original id), `label` (training label 0..N-1, else -1),
`camid` (camera number as in the file name), `split` (one of `SPLITS`).
"""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from reidcli.errors import DatasetError
from reidcli.outputs import write_text_atomic

COLUMNS = ("path", "pid", "label", "camid", "split")
SPLITS = ("train", "val_query", "val_gallery", "query", "gallery")
MANIFEST = "manifest.csv"
INFO = "dataset.json"
SHOWN = 5


def build_manifest(records: list[tuple[str, int, int, str]]) -> tuple[pd.DataFrame, dict]:
    """Apply the dataset rules to parsed records.

    Junk (pid -1) is dropped everywhere; distractors (pid 0) are kept in the gallery only;
    training labels are 0..N-1 in sorted order of the original pid.

    Args:
        records: (path, pid, camid, split) with split train, query or gallery.

    Returns:
        The manifest and the counts dropped per reason (junk, distractor_outside_gallery).
    """
    df = pd.DataFrame(records, columns=["path", "pid", "camid", "split"])
    df = df.astype({"path": str, "pid": np.int64, "camid": np.int64, "split": str})
    junk = df.pid == -1
    stray = (df.pid == 0) & (df.split != "gallery")
    dropped = {"junk": int(junk.sum()), "distractor_outside_gallery": int(stray.sum())}
    df = df[~(junk | stray)].reset_index(drop=True)
    return relabel(df), dropped


def relabel(df: pd.DataFrame) -> pd.DataFrame:
    """Training labels 0..N-1 in sorted order of pid for `train` rows; -1 elsewhere."""
    df = df.copy()
    train = df.split == "train"
    pids = np.sort(df.loc[train, "pid"].unique())
    mapping = pd.Series(np.arange(len(pids), dtype=np.int64), index=pids)
    df["label"] = np.int64(-1)
    df.loc[train, "label"] = df.loc[train, "pid"].map(mapping).to_numpy(np.int64)
    return df[list(COLUMNS)].astype({"label": np.int64})


def carve_validation(df: pd.DataFrame, n_ids: int, seed: int) -> pd.DataFrame:
    """Move `n_ids` training identities into a validation query/gallery pair.

    An identity is eligible when at least two of its cameras hold two or more images, so that
    after taking one image per camera as a query, every query still has a gallery match from
    another camera. The identities are drawn with `seed` from the eligible ones in pid order.
    For each chosen identity, the first image (by path) of every camera becomes `val_query`,
    the rest `val_gallery`. Training labels are re-derived 0..N-1 for the remaining identities.

    Args:
        df: a manifest.
        n_ids: identities to move (0 returns the manifest relabelled).
        seed: random seed for the draw.

    Returns:
        A new manifest.

    Raises:
        DatasetError: fewer eligible identities than asked for, or no training identity left.
    """
    if n_ids < 0:
        raise DatasetError(f"the number of validation identities must be >= 0, got {n_ids}")
    if n_ids == 0:
        return relabel(df)
    train = df[df.split == "train"]
    per_cam = train.groupby(["pid", "camid"]).size()
    rich_cams = (per_cam >= 2).groupby(level="pid").sum()
    eligible = np.sort(rich_cams[rich_cams >= 2].index.to_numpy())
    total = train.pid.nunique()
    if n_ids >= total:
        raise DatasetError(
            f"cannot move {n_ids} of {total} training identities to validation: "
            "at least one must stay for training"
        )
    if n_ids > len(eligible):
        raise DatasetError(
            f"only {len(eligible)} of {total} training identities have two cameras with two or "
            f"more images each, needed for validation; asked for {n_ids}"
        )
    chosen = np.random.default_rng(seed).choice(eligible, size=n_ids, replace=False)
    df = df.copy()
    moved = df.split.eq("train") & df.pid.isin(chosen)
    ordered = df[moved].sort_values("path")
    first = ~ordered.duplicated(subset=["pid", "camid"], keep="first")
    df.loc[ordered.index[first.to_numpy()], "split"] = "val_query"
    df.loc[ordered.index[~first.to_numpy()], "split"] = "val_gallery"
    return relabel(df)


def check_query_gallery(df: pd.DataFrame, query: str = "query", gallery: str = "gallery") -> None:
    """Every query identity must be in the gallery with at least one other-camera image.

    Raises:
        DatasetError: naming the identities without gallery images or without a cross-camera match.
    """
    q = df[df.split == query]
    g = df[df.split == gallery]
    g_cams = g.groupby("pid").camid.agg(set)
    absent = sorted(set(q.pid) - set(g_cams.index))
    if absent:
        raise DatasetError(
            f"{len(absent)} {query} identities have no {gallery} image: {_ids(absent)}"
        )
    q_cams = q.groupby("pid").camid.agg(set)
    lonely = sorted(
        int(pid) for pid, cams in q_cams.items() if any(g_cams[pid] <= {cam} for cam in cams)
    )
    if lonely:
        raise DatasetError(
            f"{len(lonely)} {query} identities have a query image without a {gallery} match "
            f"from another camera: {_ids(lonely)}"
        )


def _ids(pids: list) -> str:
    shown = ", ".join(str(int(p)) for p in pids[:20])
    return shown + (f", ... ({len(pids)} in all)" if len(pids) > 20 else "")


def split_stats(df: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per split: images, identities and cameras (only splits that have rows)."""
    stats = {}
    for split in SPLITS:
        rows = df[df.split == split]
        if len(rows):
            stats[split] = {
                "images": len(rows),
                "identities": int(rows.pid.nunique()),
                "cameras": int(rows.camid.nunique()),
            }
    return stats


def save_prepared(df: pd.DataFrame, info: dict, out: Path) -> None:
    """Write `manifest.csv` and `dataset.json` into `out`, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / MANIFEST, df[list(COLUMNS)].to_csv(index=False))
    write_text_atomic(out / INFO, json.dumps(info, indent=2) + "\n")


def load_manifest(root: str | Path, manifest: str | Path | None = None) -> pd.DataFrame:
    """Read a prepared dataset's manifest and check that its images are still in place.

    Args:
        root: the folder `reid prepare` wrote.
        manifest: the manifest file; default `ROOT/manifest.csv` (a relative path that does not
            exist from the working folder is taken relative to `root`).

    Returns:
        Columns path (str), pid, label, camid (int64), split (str).

    Raises:
        DatasetError: missing folder or manifest, wrong columns or values, moved images.
    """
    root = Path(root)
    path = _manifest_path(root, manifest)
    try:
        df = pd.read_csv(path, dtype={"path": str, "split": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not a readable manifest CSV ({err})") from None
    if tuple(df.columns) != COLUMNS:
        raise DatasetError(
            f"{path}: expected columns {','.join(COLUMNS)}, got {','.join(map(str, df.columns))}; "
            "re-run `reid prepare`"
        )
    try:
        df = df.astype({"pid": np.int64, "label": np.int64, "camid": np.int64})
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: pid, label and camid must be integers") from None
    unknown = sorted(set(df.split) - set(SPLITS))
    if unknown:
        raise DatasetError(f"{path}: unknown split names {unknown} (valid: {', '.join(SPLITS)})")
    missing = [p for p in df.path if not os.path.exists(p)]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(df)} images listed in {path} are missing (moved or deleted "
            f"since prepare?): {', '.join(missing[:SHOWN])}; re-run `reid prepare`"
        )
    return df


def _manifest_path(root: Path, manifest: str | Path | None) -> Path:
    if manifest is None:
        if not root.is_dir():
            raise DatasetError(
                f"prepared dataset folder {root} not found; run `reid prepare DATASET --out {root}`"
            )
        path = root / MANIFEST
    else:
        path = Path(manifest)
        if not path.is_absolute() and not path.exists():
            path = root / path
    if not path.is_file():
        raise DatasetError(f"manifest {path} not found; run `reid prepare` to write it")
    return path


def read_dataset_info(root: str | Path) -> dict:
    """Read `ROOT/dataset.json` written by `reid prepare`.

    Raises:
        DatasetError: the file is missing or not valid JSON.
    """
    path = Path(root) / INFO
    if not path.is_file():
        raise DatasetError(f"{path} not found; run `reid prepare` to write it")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: invalid JSON ({err})") from None
