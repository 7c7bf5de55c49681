"""An index folder: a manifest naming immutable segment files, their deletion lists and the
trained quantizer.

    gallery.idx/
        MANIFEST                   JSON: the gallery's metadata and the files below
        seg-00000001.rseg          a segment: rows and labels (`reidcli.index.container`)
        del-00000007.npy           row ids of a segment deleted since it was written (sorted)
        quantizer-00000000.faiss   IVF-PQ: the trained, empty index every segment's codes use

Only MANIFEST ever changes. A writer writes new files (each fsynced), then the new manifest
beside the old one; it fsyncs it, renames it over the old one and fsyncs the folder. Killed
before the rename, it leaves the previous index and files that no manifest names (removed by
the next writer, under the lock); after it, the new index. Files that the previous manifest
named and the new one does not are removed after the rename: a reader that read the previous
manifest already holds them open (a removed file stays readable through an open handle), or
finds one gone and reads the manifest again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reidcli.errors import GalleryIndexError
from reidcli.index.container import Reader

MANIFEST = "MANIFEST"
FORMAT = "reid-index"
VERSION = 2
# A reader that finds a named file gone (a writer replaced it meanwhile) reads the manifest
# again, this many times at most.
OPEN_ATTEMPTS = 20


def path_hashes(paths) -> np.ndarray:
    """(N,) uint64: the first 8 bytes of each stored path's BLAKE2b digest.

    A segment keeps them beside its paths, so that finding whether paths are in the index
    reads 8 bytes a row instead of every path."""
    out = np.empty(len(paths), dtype=np.uint64)
    for i, text in enumerate(paths):
        digest = hashlib.blake2b(str(text).encode("utf-8", "surrogateescape"), digest_size=8)
        out[i] = int.from_bytes(digest.digest(), "little")
    return out


def is_index_folder(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def read_manifest(folder: Path) -> dict:
    """The manifest of an index folder, checked for what every reader relies on.

    Raises:
        GalleryIndexError: no manifest, or one that is not this format.
    """
    path = folder / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GalleryIndexError(f"{folder}: not a readable reid index (no {MANIFEST})") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise GalleryIndexError(f"{folder}: not a readable reid index ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GalleryIndexError(f"{folder}: not a readable reid index (not a {FORMAT} manifest)")
    if doc.get("version") != VERSION:
        raise GalleryIndexError(
            f"{folder}: index format version {doc.get('version')}; this reid reads {VERSION}"
        )
    try:
        for entry in doc["segments"]:
            for key in ("file", "rows", "first_id", "last_id", "deleted", "deleted_file"):
                entry[key]
        doc["meta"]["kind"], doc["next_file"]
    except (KeyError, TypeError) as err:
        raise GalleryIndexError(f"{folder}: not a readable reid index ({err!r} missing)") from None
    return doc


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(folder: Path, doc: dict) -> None:
    """Replace the manifest atomically (write, fsync, rename, fsync the folder)."""
    doc = doc | {
        "format": FORMAT,
        "version": VERSION,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(doc, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(folder)


def write_array_file(path: Path, values: np.ndarray) -> int:
    """A new .npy file (fsynced before it is named by a manifest); its size in bytes."""
    with path.open("xb") as handle:
        np.save(handle, np.ascontiguousarray(values), allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    return path.stat().st_size


def write_bytes_file(path: Path, data) -> int:
    """A new file of raw bytes (fsynced before it is named by a manifest); its size."""
    with path.open("xb") as handle:
        handle.write(memoryview(data).cast("B"))
        handle.flush()
        os.fsync(handle.fileno())
    return path.stat().st_size


def read_deleted(folder: Path, name: str | None) -> np.ndarray:
    if name is None:
        return np.zeros(0, dtype=np.int64)
    try:
        with (folder / name).open("rb") as handle:
            values = np.load(handle, allow_pickle=False)
    except FileNotFoundError:
        raise  # the caller reads the manifest again
    except (OSError, ValueError) as err:
        raise GalleryIndexError(f"{folder / name}: unreadable deletion list ({err})") from None
    if values.dtype != np.int64 or values.ndim != 1:
        raise GalleryIndexError(f"{folder / name}: not a deletion list")
    return values


def remove_unnamed(folder: Path, doc: dict) -> list[str]:
    """Remove the files of the folder that the manifest `doc` does not name (left by killed or
    replaced writes). Call it only while holding the index's lock."""
    named = {MANIFEST, *(doc.get("quantizer") or "",)}
    for entry in doc["segments"]:
        named.add(entry["file"])
        if entry["deleted_file"]:
            named.add(entry["deleted_file"])
    removed = []
    for child in folder.iterdir():
        if child.name not in named and child.is_file():
            child.unlink(missing_ok=True)
            removed.append(child.name)
    return removed


@dataclass
class Stored:
    """A segment as a manifest names it, with its file opened (or its in-memory sections while
    it is new) and its deleted rows."""

    rows: int
    first_id: int
    last_id: int
    file: str | None = None
    reader: Reader | None = None
    data: dict = field(default_factory=dict)  # a new segment's sections
    deleted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    deleted_file: str | None = None
    changed: bool = False  # deletions not yet written
    bytes: int = 0
    _cache: dict = field(default_factory=dict)

    @property
    def live_rows(self) -> int:
        return self.rows - len(self.deleted)

    def array(self, name: str, keep: bool = True) -> np.ndarray:
        """A section of the segment (cached when `keep`)."""
        if name in self.data:
            return self.data[name]
        if name in self._cache:
            return self._cache[name]
        assert self.reader is not None
        value = self.reader.strings(name) if name == "paths" else self.reader.array(name)
        if keep:
            self._cache[name] = value
        return value

    def has(self, name: str) -> bool:
        return name in self.data or (self.reader is not None and name in self.reader.sections)

    def live(self) -> np.ndarray:
        """(rows,) bool: the rows not deleted."""
        cached = self._cache.get("live")
        if cached is None or cached[0] != len(self.deleted):
            ids = self.array("ids")
            live = (
                ~np.isin(ids, self.deleted, assume_unique=True)
                if len(self.deleted)
                else (np.ones(len(ids), dtype=bool))
            )
            cached = self._cache["live"] = (len(self.deleted), live)
        return cached[1]

    def paths_at(self, positions: np.ndarray) -> np.ndarray:
        if "paths" in self.data or "paths" in self._cache:
            return self.array("paths")[positions]
        assert self.reader is not None
        return self.reader.strings_at("paths", positions)

    def entry(self) -> dict:
        return {"file": self.file, "rows": self.rows, "first_id": self.first_id,
                "last_id": self.last_id, "deleted": len(self.deleted),
                "deleted_file": self.deleted_file, "bytes": self.bytes}  # fmt: skip


def open_segments(folder: Path) -> tuple[dict, list[Stored]]:
    """The manifest and its segments, every named file opened from that one manifest.

    Raises:
        GalleryIndexError: a damaged folder (a named file missing after repeated reads of the
            manifest, or unreadable).
    """
    for _ in range(OPEN_ATTEMPTS):
        doc = read_manifest(folder)
        try:
            segments = []
            for entry in doc["segments"]:
                reader = Reader(folder / entry["file"], missing=FileNotFoundError)
                segment = Stored(
                    entry["rows"], entry["first_id"], entry["last_id"], entry["file"], reader,
                    bytes=int(entry.get("bytes", 0)),
                )  # fmt: skip
                segment.deleted = read_deleted(folder, entry["deleted_file"])
                segment.deleted_file = entry["deleted_file"]
                if len(segment.deleted) != entry["deleted"]:
                    raise GalleryIndexError(f"{folder}: {entry['deleted_file']} disagrees with "
                                            "the manifest (corrupt index)")  # fmt: skip
                segments.append(segment)
            quantizer = None
            if doc.get("quantizer"):
                quantizer = (folder / doc["quantizer"]).read_bytes()
        except FileNotFoundError:
            continue  # a writer replaced the manifest meanwhile: read the new one
        return doc | {"quantizer_bytes": quantizer}, segments
    raise GalleryIndexError(
        f"{folder}: files named by its manifest are missing (damaged index, or a writer that "
        "changes it faster than it can be read)"
    )
