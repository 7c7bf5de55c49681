"""Opening galleries on their backend, and the lock that writers hold."""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from reidcli.errors import RecipeError
from reidcli.index.gallery import Gallery
from reidcli.locking import exclusive
from reidcli.outputs import remove_stale_temporaries

log = logging.getLogger(__name__)

BACKENDS = ("faiss", "milvus")


def open_gallery(index: str | Path, backend: str = "faiss", uri: str | None = None) -> Gallery:
    """An existing gallery: a faiss index folder, or a Milvus collection at `uri`."""
    check_backend(backend, uri)
    if backend == "milvus":
        from reidcli.index.milvus_backend import MilvusGallery

        return MilvusGallery.open(uri, str(index))
    from reidcli.index.faiss_backend import FaissGallery

    return FaissGallery.open(Path(index))


def check_backend(backend: str, uri: str | None) -> None:
    if backend not in BACKENDS:
        raise RecipeError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if (backend == "milvus") != (uri is not None):
        raise RecipeError("--uri (a Milvus server or Milvus Lite file) goes with --backend milvus")


def _lock_path(index, backend: str, uri: str | None) -> Path | None:
    """The lock file of an index folder or a Milvus Lite file; None for a Milvus server."""
    if backend == "faiss":
        path = Path(index)
        return path.with_name(f".{path.name}.lock")
    if uri is not None and "://" not in uri:  # Milvus Lite: a local file
        path = Path(uri)
        return path.with_name(f".{path.name}.{index}.lock")
    return None


@contextmanager
def writing(index, backend: str = "faiss", uri: str | None = None):
    """Hold the gallery's lock file while changing it: concurrent writers wait their turn, and
    the temporary files of a writer that was killed are removed.

    A Milvus server has no lock here: one writer at a time per gallery."""
    lock = _lock_path(index, backend, uri)
    if lock is None:
        yield
        return
    with exclusive(lock, f"index {index if backend == 'faiss' else uri}", wait=True):
        if backend == "faiss":
            _clean(Path(index))
        yield


def _clean(path: Path) -> None:
    """Remove what killed writers of the index at `path` left: temporary files and folders
    beside it, and files in its folder that its manifest does not name."""
    from reidcli.index.segments import is_index_folder, read_manifest, remove_unnamed

    stale = [p.name for p in remove_stale_temporaries(path.parent, [path.name])]
    for pattern in (f".{path.name}.*.building", f".{path.name}.*.upgrade"):
        for folder in path.parent.glob(pattern):
            shutil.rmtree(folder, ignore_errors=True)
            stale.append(folder.name)
    if is_index_folder(path):
        stale += remove_unnamed(path, read_manifest(path))
    for name in stale:
        log.warning("removed %s, left by a write that was killed", name)


def info(gallery: Gallery) -> dict:
    """What `reid index info` prints: the metadata, the location, the row count."""
    meta = dict(gallery.meta)
    where = str(gallery.path) if hasattr(gallery, "path") else gallery.location
    out = {"index": where, **meta, "count": gallery.count}
    if hasattr(gallery, "memory_bytes"):
        out["index_bytes"] = gallery.memory_bytes()
    if hasattr(gallery, "describe"):
        out |= gallery.describe()
    return out
