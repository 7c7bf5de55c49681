"""The index container file: sections of bytes, then a JSON header, then a trailer.

    [section 0][section 1]...[header JSON][header length: uint64 LE][MAGIC]

The header names each section's offset and length and holds the index's metadata. Sections are
written in one pass (the faiss index streams straight to the file) and read back at their
offsets; a 2-D array can stay on disk and be read a few rows at a time. A file is written
beside its destination and renamed into place, so a reader sees the old index or the new one,
never a half-written file.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from reidcli.errors import GalleryIndexError

MAGIC = b"REIDIDX1"
TRAILER = struct.Struct("<Q8s")
ALIGN = 64


class Writer:
    """Sections appended to an open file, then `finish(meta)` writes the header and trailer."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.sections: dict[str, dict] = {}

    def _pad(self) -> None:
        self.handle.write(b"\0" * (-self.handle.tell() % ALIGN))

    def stream(self, name: str, write: Callable[[BinaryIO], None]) -> None:
        """A section whose bytes `write(handle)` produces."""
        self._pad()
        start = self.handle.tell()
        write(self.handle)
        self.sections[name] = {"offset": start, "nbytes": self.handle.tell() - start}

    def array(self, name: str, values: np.ndarray) -> None:
        """A C-ordered array section (its dtype and shape go into the header)."""
        values = np.ascontiguousarray(values)
        self.stream(name, lambda handle: _write_array(handle, values))
        self.sections[name] |= {"dtype": values.dtype.str, "shape": list(values.shape)}

    def strings(self, name: str, values) -> None:
        """A list of strings: UTF-8 bytes and an int64 offsets array (`NAME.offsets`)."""
        # surrogateescape: file names that are not UTF-8 survive the round trip
        encoded = [str(v).encode("utf-8", "surrogateescape") for v in values]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        self.stream(name, lambda handle: handle.write(b"".join(encoded)))
        self.array(f"{name}.offsets", offsets)

    def finish(self, meta: dict) -> None:
        header = json.dumps({"meta": meta, "sections": self.sections}).encode("utf-8")
        self.handle.write(header)
        self.handle.write(TRAILER.pack(len(header), MAGIC))


def _write_array(handle: BinaryIO, values: np.ndarray) -> None:
    step = max(1, (64 << 20) // max(1, values.itemsize * int(np.prod(values.shape[1:]))))
    for start in range(0, max(1, len(values)), step):  # bounded copies of a memory map
        handle.write(values[start : start + step].tobytes())


@contextmanager
def atomic_write(path: Path):
    """A `Writer` on a temporary file beside `path`, renamed onto it when the block succeeds.

    An exception (or an interruption) leaves `path` as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            yield Writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Reader:
    """The header and sections of a container file, all read from one open handle: a writer
    that replaces the file meanwhile does not mix two versions.

    Raises:
        GalleryIndexError: a missing file, or one that is not a complete index container.
    """

    def __init__(self, path: Path, missing: type[Exception] = GalleryIndexError) -> None:
        """`missing`: the error of a file that is not there (FileNotFoundError, for a caller
        that reads its manifest again then)."""
        self.path = path
        try:
            self.handle = handle = path.open("rb")
        except (FileNotFoundError, IsADirectoryError):
            if missing is FileNotFoundError:
                raise
            raise GalleryIndexError(f"{path}: no such index file") from None
        self.size = os.fstat(handle.fileno()).st_size
        try:
            if self.size < TRAILER.size:
                raise ValueError("too short")
            handle.seek(self.size - TRAILER.size)
            length, magic = TRAILER.unpack(handle.read(TRAILER.size))
            if magic != MAGIC or length > self.size - TRAILER.size:
                raise ValueError("no index trailer (truncated, or not written by reid)")
            handle.seek(self.size - TRAILER.size - length)
            header = json.loads(handle.read(length).decode("utf-8"))
            self.meta, self.sections = header["meta"], header["sections"]
            end = self.size - TRAILER.size - length
            for name, section in self.sections.items():
                if section["offset"] < 0 or section["offset"] + section["nbytes"] > end:
                    raise ValueError(f"section {name} lies outside the file")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            handle.close()
            raise GalleryIndexError(f"{path}: not a readable reid index ({err})") from None

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)
        if handle is not None:
            handle.close()

    def _section(self, name: str) -> dict:
        if name not in self.sections:
            raise GalleryIndexError(f"{self.path}: the index has no {name!r} section")
        return self.sections[name]

    def array(self, name: str) -> np.ndarray:
        section = self._section(name)
        dtype, shape = self._layout(name, section)
        self.handle.seek(section["offset"])
        data = self.handle.read(section["nbytes"])
        if len(data) != section["nbytes"]:
            raise GalleryIndexError(f"{self.path}: section {name} is truncated")
        return np.frombuffer(data, dtype).reshape(shape).copy()

    def rows(self, name: str) -> DiskRows:
        """A 2-D array section left on disk: rows are read when asked for."""
        section = self._section(name)
        dtype, shape = self._layout(name, section)
        if len(shape) != 2:
            raise GalleryIndexError(f"{self.path}: section {name} is not a 2-D array")
        return DiskRows(self.path, os.dup(self.handle.fileno()), section["offset"], shape, dtype)

    def _layout(self, name: str, section: dict) -> tuple[np.dtype, tuple]:
        dtype, shape = np.dtype(section["dtype"]), tuple(section["shape"])
        if int(np.prod(shape)) * dtype.itemsize != section["nbytes"]:
            raise GalleryIndexError(f"{self.path}: section {name} has the wrong length")
        return dtype, shape

    def strings(self, name: str) -> np.ndarray:
        offsets = self.array(f"{name}.offsets")
        section = self._section(name)
        if offsets.size == 0 or offsets[-1] != section["nbytes"] or (np.diff(offsets) < 0).any():
            raise GalleryIndexError(f"{self.path}: section {name} is inconsistent")
        self.handle.seek(section["offset"])
        data = self.handle.read(section["nbytes"])
        try:
            return np.array(
                [
                    data[a:b].decode("utf-8", "surrogateescape")
                    for a, b in itertools.pairwise(offsets)
                ],
                dtype=object,
            )
        except UnicodeDecodeError as err:  # pragma: no cover - surrogateescape decodes anything
            raise GalleryIndexError(f"{self.path}: section {name} is not UTF-8 ({err})") from None

    def strings_at(self, name: str, positions: np.ndarray) -> np.ndarray:
        """The strings at `positions` of a strings section, read one by one."""
        offsets = self.array(f"{name}.offsets")
        section = self._section(name)
        if offsets.size == 0 or offsets[-1] != section["nbytes"]:
            raise GalleryIndexError(f"{self.path}: section {name} is inconsistent")
        out = np.empty(len(positions), dtype=object)
        fd = self.handle.fileno()
        for i, at in enumerate(np.asarray(positions, dtype=np.int64)):
            a, b = int(offsets[at]), int(offsets[at + 1])
            data = os.pread(fd, b - a, section["offset"] + a)
            if len(data) != b - a:
                raise GalleryIndexError(f"{self.path}: section {name} is truncated")
            out[i] = data.decode("utf-8", "surrogateescape")
        return out

    def stream(self, name: str, read: Callable[[Callable[[int], bytes]], object]):
        """`read(chunk)` where `chunk(n)` returns the section's next (at most n) bytes."""
        section = self._section(name)
        handle = self.handle
        handle.seek(section["offset"])
        left = section["nbytes"]

        def chunk(n: int) -> bytes:
            nonlocal left
            data = handle.read(min(n, left))
            left -= len(data)
            return data

        return read(chunk)


READERS = 16  # concurrent row reads
_POOL: list = []


def _pool():
    """One thread pool per process for the row reads (created on first use)."""
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(READERS, thread_name_prefix="reid-rows"))
    return _POOL[0]


class DiskRows:
    """Rows of a (N, D) array section read with positioned reads, a few at a time.

    Nothing is mapped into the process: a search holds only the rows it re-scores, and the
    operating system's page cache (not the process) keeps what it reads.
    """

    def __init__(self, path: Path, fd: int, offset: int, shape: tuple, dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.row_bytes = int(shape[1]) * dtype.itemsize
        # an open descriptor (owned): a writer replaces the file by renaming, this one stays
        self.fd = fd

    def __del__(self) -> None:
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)
            self.fd = None

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, positions: np.ndarray) -> np.ndarray:
        """(n, D) rows at `positions` (in that order); see `gather`."""
        out = np.empty((len(positions), self.shape[1]), dtype=self.dtype)
        gather(out, [(self, np.asarray(positions), np.arange(len(positions)))])
        return out

    def read(self) -> np.ndarray:
        """Every row, in memory (from the file this object opened)."""
        out = np.empty(self.shape, dtype=self.dtype)
        view, done = memoryview(out).cast("B"), 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done : done + (64 << 20)]], self.offset + done)
            if got <= 0:
                raise GalleryIndexError(f"{self.path}: truncated vectors section")
            done += got
        return out


def gather(out: np.ndarray, requests: list) -> None:
    """Fill rows of `out` from `DiskRows`: each request is (rows, positions in it, rows of out).

    The reads of every request are issued from READERS threads at once: rows not in the page
    cache come from the disk, whose latency overlaps instead of adding up (also across the
    files of several segments).
    """
    view = memoryview(out).cast("B")
    size = out.shape[1] * out.itemsize
    reads = []  # (rows, row in it, row of out), each distinct row of a file read once
    for rows, positions, slots in requests:
        if rows.row_bytes != size or rows.dtype != out.dtype:
            raise GalleryIndexError(f"{rows.path}: rows of another width")
        unique, first = np.unique(positions, return_index=True)
        reads += [(rows, int(r), int(slots[i])) for r, i in zip(unique, first, strict=True)]

    def read(part: list) -> None:
        for rows, row, slot in part:
            got = os.preadv(rows.fd, [view[slot * size : (slot + 1) * size]],
                            rows.offset + row * size)  # fmt: skip
            if got != size:
                raise GalleryIndexError(f"{rows.path}: truncated while reading row {row}")

    step = max(1, -(-len(reads) // READERS))
    parts = [reads[a : a + step] for a in range(0, len(reads), step)]
    if len(parts) > 1:
        list(_pool().map(read, parts))
    else:
        for part in parts:
            read(part)
    for _, positions, slots in requests:  # repeated positions: copies of the row read
        unique, first, inverse = np.unique(positions, return_index=True, return_inverse=True)
        out[slots] = out[slots[first][inverse.ravel()]]
