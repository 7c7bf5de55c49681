"""Features files (`.npz`): loading with validation, and saving.

A features file holds `query_features` (Q, D) and `gallery_features` (G, D) (any real numeric
dtype: float32, float64 as numpy saves by default, float16, integers; converted to float32),
`query_pids`, `gallery_pids`, `query_camids`, `gallery_camids` (any integer dtype; converted to
int64), and optionally `query_paths` and `gallery_paths` (strings) for visualisation and
`model_sha256` (the checkpoint that produced them, which calibrations and indexes check).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reidcli.errors import FeaturesError
from reidcli.outputs import atomic_path

REQUIRED_KEYS = (
    "query_features",
    "gallery_features",
    "query_pids",
    "gallery_pids",
    "query_camids",
    "gallery_camids",
)
PATH_KEYS = ("query_paths", "gallery_paths")
# SHA-256 of the checkpoint that produced the features (a string), when it is known.
MODEL_KEY = "model_sha256"


@dataclass(frozen=True)
class Labels:
    """Person ids and cameras of one side (query or gallery) of an evaluation.

    Attributes:
        pids: (N,) int64 person ids.
        camids: (N,) int64 camera ids.
    """

    pids: np.ndarray
    camids: np.ndarray

    def __post_init__(self) -> None:
        # arrays, lists or tensors alike; a frozen dataclass sets its fields through object
        pids, camids = _as_numpy(self.pids, np.int64), _as_numpy(self.camids, np.int64)
        if pids.ndim != 1 or pids.shape != camids.shape:
            raise ValueError(f"pids {pids.shape} and camids {camids.shape} must be equal 1-D")
        object.__setattr__(self, "pids", pids)
        object.__setattr__(self, "camids", camids)

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, rows: slice) -> Labels:
        """The labels of a slice of the items (views, no copy)."""
        return Labels(self.pids[rows], self.camids[rows])


@dataclass(frozen=True)
class Features:
    """Query and gallery embeddings with their identities and cameras.

    Attributes:
        query_features: (Q, D) float32 query embeddings.
        gallery_features: (G, D) float32 gallery embeddings.
        query_pids: (Q,) int64 person ids.
        gallery_pids: (G,) int64 person ids.
        query_camids: (Q,) int64 camera ids.
        gallery_camids: (G,) int64 camera ids.
        query_paths: (Q,) image paths, or None.
        gallery_paths: (G,) image paths, or None.
    """

    query_features: np.ndarray
    gallery_features: np.ndarray
    query_pids: np.ndarray
    gallery_pids: np.ndarray
    query_camids: np.ndarray
    gallery_camids: np.ndarray
    query_paths: np.ndarray | None = None
    gallery_paths: np.ndarray | None = None

    @property
    def has_paths(self) -> bool:
        """Whether both path arrays are present."""
        return self.query_paths is not None and self.gallery_paths is not None

    @property
    def query(self) -> Labels:
        """Query person ids and cameras."""
        return Labels(self.query_pids, self.query_camids)

    @property
    def gallery(self) -> Labels:
        """Gallery person ids and cameras."""
        return Labels(self.gallery_pids, self.gallery_camids)


def check_rows(arrays: dict[str, np.ndarray], prefix: str, source: str) -> None:
    """Check one set of rows and convert it in place to float32 / int64.

    The keys are `{prefix}features`, `{prefix}pids`, `{prefix}camids` and optionally
    `{prefix}paths` (prefix "query_" or "gallery_" here; "" for a `reid embed` file).
    """
    key = f"{prefix}features"
    feats = arrays[key]
    if feats.ndim != 2 or feats.shape[0] == 0 or feats.shape[1] == 0:
        raise FeaturesError(
            f"{source}: {key} must be a non-empty 2-D array (N, D), got shape {feats.shape}"
        )
    if not (np.issubdtype(feats.dtype, np.floating) or np.issubdtype(feats.dtype, np.integer)):
        raise FeaturesError(f"{source}: {key} must be real numbers, got {feats.dtype}")
    converted = feats.dtype != np.float32
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused below
        feats = arrays[key] = np.ascontiguousarray(feats, dtype=np.float32)
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        after = " after conversion to float32" if converted else ""
        raise FeaturesError(
            f"{source}: {key} has non-finite values (NaN or inf){after} in {rows.size} "
            f"row(s), first at row {int(rows[0])}"
        )
    for kind in ("pids", "camids"):
        name = f"{prefix}{kind}"
        arrays[name] = _as_int64(arrays[name], name, source)
        if arrays[name].shape != (feats.shape[0],):
            raise FeaturesError(
                f"{source}: {name} has shape {arrays[name].shape}, expected ({feats.shape[0]},) "
                f"to match {key}"
            )
    paths = arrays.get(f"{prefix}paths")
    if paths is not None and paths.shape != (feats.shape[0],):
        raise FeaturesError(
            f"{source}: {prefix}paths has shape {paths.shape}, expected ({feats.shape[0]},)"
        )


def valid_queries(query: Labels, gallery: Labels) -> np.ndarray:
    """(Q,) bool: the queries that have a true match under the Market-1501 protocol, a gallery
    item of the same pid seen by another camera."""

    def gallery_counts(g_keys: np.ndarray, q_keys: np.ndarray) -> np.ndarray:
        # number of gallery items sharing each query's key (keys: rows of ints)
        _, inverse = np.unique(np.concatenate([g_keys, q_keys]), axis=0, return_inverse=True)
        inverse = inverse.ravel()
        counts = np.bincount(inverse[: len(g_keys)], minlength=int(inverse.max()) + 1)
        return counts[inverse[len(g_keys) :]]

    if not len(query) or not len(gallery):
        return np.zeros(len(query), dtype=bool)
    same_pid = gallery_counts(gallery.pids[:, None], query.pids[:, None])
    g_pairs = np.stack([gallery.pids, gallery.camids], 1)
    same_pid_cam = gallery_counts(g_pairs, np.stack([query.pids, query.camids], 1))
    return same_pid - same_pid_cam > 0


def check_scorable(features: Features, source: str = "features") -> None:
    """Refuse query and gallery labels under which no query can be scored.

    Raises:
        FeaturesError: naming why no query has a true match from another camera (every query
            or gallery pid unknown, one camera only, no shared identity).
    """
    if valid_queries(features.query, features.gallery).any():
        return
    q, g = features.query, features.gallery
    cams = np.union1d(q.camids, g.camids)
    if (q.pids == -1).all():
        why = "every query pid is -1 (unknown identity)"
    elif (g.pids == -1).all():
        why = "every gallery pid is -1 (unknown identity)"
    elif len(cams) == 1:
        why = f"every item is from camera {int(cams[0])}, and same-camera matches do not count"
    elif not np.intersect1d(q.pids, g.pids).size:
        why = "the query and gallery share no identity"
    else:
        why = "no query identity appears in the gallery under another camera"
    raise FeaturesError(
        f"{source}: no query can be scored: {why} (Market-1501 protocol: a query needs a "
        "gallery item of its identity from another camera)"
    )


def _as_int64(values: np.ndarray, key: str, source: str) -> np.ndarray:
    """Any integer dtype as int64; anything else (floats, strings, bool) is refused."""
    if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.integer):
        raise FeaturesError(f"{source}: {key} must be integers, got {values.dtype}")
    if values.dtype == np.uint64 and values.size and values.max() > np.iinfo(np.int64).max:
        raise FeaturesError(f"{source}: {key} has values beyond the int64 range")
    return np.ascontiguousarray(values, dtype=np.int64)


def validate_features(arrays: dict[str, np.ndarray], source: str = "features") -> Features:
    """Check a dict of arrays against the features-file contract.

    Args:
        arrays: The arrays by key.
        source: Name used in error messages (usually the file path).

    Returns:
        The validated `Features`.

    Raises:
        FeaturesError: On a missing key, non-numeric features, non-integer labels, a wrong
            shape, mismatched lengths, different embedding widths or non-finite values.
    """
    arrays = dict(arrays)  # converted copies replace the caller's entries in ours only
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise FeaturesError(
            f"{source}: missing key(s) {', '.join(missing)} "
            f"(a features file needs {', '.join(REQUIRED_KEYS)})"
        )
    for side in ("query", "gallery"):
        check_rows(arrays, f"{side}_", source)
    q_dim, g_dim = arrays["query_features"].shape[1], arrays["gallery_features"].shape[1]
    if q_dim != g_dim:
        raise FeaturesError(
            f"{source}: query_features are {q_dim}-d but gallery_features are {g_dim}-d"
        )
    return Features(**{key: arrays[key] for key in (*REQUIRED_KEYS, *PATH_KEYS) if key in arrays})


def load_features(path: str | Path) -> Features:
    """Load and validate a features `.npz` file.

    Args:
        path: The `.npz` file.

    Returns:
        The validated `Features`.

    Raises:
        FeaturesError: When the file is missing, unreadable or breaks the contract.
    """
    return validate_features(read_npz(path), source=str(path))


def recorded_model(path: str | Path) -> str | None:
    """The checkpoint SHA-256 a features file records (reid embed, reid eval --save-features),
    or None; reads that one entry."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return str(data[MODEL_KEY]) if MODEL_KEY in data.files else None
    except (OSError, ValueError):
        return None  # the caller has read the file already: this cannot fail where it matters


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file (no pickles).

    Raises:
        FeaturesError: When the file is missing or is not a readable `.npz`.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not found"
        raise FeaturesError(f"features file {what}: {path}")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as err:
        raise FeaturesError(f"{path}: cannot read the features file ({err.strerror})") from None
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # an .npz is a zip archive (or empty one)
        kind = "empty" if not magic else "not an .npz file (a zip archive of numpy arrays)"
        raise FeaturesError(f"{path}: {kind}; features files are written by reid embed / reid eval")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise FeaturesError(f"{path}: not a readable .npz features file ({err})") from err


def as_features(
    query_features,
    gallery_features,
    query_pids,
    gallery_pids,
    query_camids,
    gallery_camids,
    query_paths=None,
    gallery_paths=None,
    source: str = "features",
) -> Features:
    """Convert numpy arrays, torch tensors or lists to validated `Features`.

    Args:
        query_features: (Q, D) query embeddings.
        gallery_features: (G, D) gallery embeddings.
        query_pids: (Q,) person ids.
        gallery_pids: (G,) person ids.
        query_camids: (Q,) camera ids.
        gallery_camids: (G,) camera ids.
        query_paths: Optional (Q,) image paths.
        gallery_paths: Optional (G,) image paths.
        source: Name used in error messages.

    Raises:
        FeaturesError: As `validate_features`.
    """
    arrays = {
        "query_features": _as_numpy(query_features),
        "gallery_features": _as_numpy(gallery_features),
        "query_pids": _as_numpy(query_pids),
        "gallery_pids": _as_numpy(gallery_pids),
        "query_camids": _as_numpy(query_camids),
        "gallery_camids": _as_numpy(gallery_camids),
    }
    for key, paths in (("query_paths", query_paths), ("gallery_paths", gallery_paths)):
        if paths is not None:
            arrays[key] = np.asarray([str(p) for p in paths], dtype=str)
    return validate_features(arrays, source=source)


def save_features(
    path: str | Path,
    query_features,
    gallery_features,
    query_pids,
    gallery_pids,
    query_camids,
    gallery_camids,
    query_paths=None,
    gallery_paths=None,
    model_sha256: str | None = None,
) -> Path:
    """Validate and write a features `.npz` file (numpy arrays or torch tensors).

    Args:
        path: Destination `.npz` file; its folder is created.
        query_features, gallery_features, query_pids, gallery_pids, query_camids,
        gallery_camids, query_paths, gallery_paths: As `as_features`.
        model_sha256: SHA-256 of the checkpoint that produced them (kept as `model_sha256`).

    Returns:
        The written path.
    """
    path = Path(path)
    feats = as_features(
        query_features, gallery_features, query_pids, gallery_pids, query_camids,
        gallery_camids, query_paths, gallery_paths, source=str(path),
    )  # fmt: skip
    stored = {k: getattr(feats, k) for k in (*REQUIRED_KEYS, *PATH_KEYS)}
    if model_sha256 is not None:
        stored[MODEL_KEY] = np.asarray(model_sha256)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:  # a handle: savez would add .npz
        np.savez(fh, **{k: v for k, v in stored.items() if v is not None})
    return path


def _as_numpy(values, dtype=None) -> np.ndarray:
    """Numpy arrays, lists and torch tensors (any device) as contiguous numpy arrays.

    Tensors are duck-typed (`.detach().cpu().numpy()`), so this module never imports torch.
    """
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        try:
            values = values.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy lacks: widen to float32
            values = values.float().numpy()
    return np.ascontiguousarray(np.asarray(values), dtype=dtype)
