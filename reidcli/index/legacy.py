"""Indexes of the earlier single-file format (format version 1): recognised, refused with the
command that converts them, and converted by `reid index upgrade`.

A version-1 file is one container (`reidcli.index.container`) holding a whole faiss index
(flat and HNSW under an id map, IVF-PQ with its row ids), the rows' labels and, for IVF-PQ with
refinement, the float32 rows. Upgrading keeps every row id, label, vector and code: a flat or
IVF-PQ index answers exactly as before, an HNSW graph is kept as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from reidcli.errors import GalleryIndexError
from reidcli.index.container import Reader
from reidcli.index.gallery import Rows

VERSION = 1


def _legacy(path: Path) -> Reader:
    reader = Reader(path)
    meta = reader.meta
    if meta.get("format") != "reid-index" or meta.get("version") != VERSION:
        raise GalleryIndexError(f"{path}: not a reid index (format {meta.get('version')!r})")
    return reader


def refuse_legacy(path: Path) -> None:
    """Raise the one-line error of a file where an index folder is expected.

    Raises:
        GalleryIndexError: always; for a version-1 index it names `reid index upgrade`.
    """
    _legacy(path)
    raise GalleryIndexError(
        f"{path}: an index in the single-file format of earlier reid versions; convert it "
        f"with: reid index upgrade {path}"
    )


def upgrade(path: Path) -> dict:
    """Convert a version-1 index file into an index folder at the same path; the old file is
    kept beside it as `PATH.v1`. Returns what `reid index upgrade` prints.

    Raises:
        GalleryIndexError: not a version-1 index, or `PATH.v1` already exists.
    """
    from reidcli.index.faiss_backend import FaissGallery
    from reidcli.index.faiss_common import MAX_DELETED, MAX_SEGMENTS, import_faiss

    path = Path(path)
    if path.is_dir():
        raise GalleryIndexError(f"{path}: already an index folder (nothing to upgrade)")
    if not path.is_file():
        raise GalleryIndexError(f"{path}: no such index file")
    reader = _legacy(path)
    kept = path.with_name(path.name + ".v1")
    if kept.exists():
        raise GalleryIndexError(f"{kept} exists: move it away first (the upgrade keeps the old "
                                "file there)")  # fmt: skip
    faiss = import_faiss()

    def read(chunk):
        return faiss.read_index(faiss.PyCallbackIOReader(chunk, 1 << 20))

    try:
        index = reader.stream("faiss", read)
    except RuntimeError as err:
        raise GalleryIndexError(f"{path}: the faiss index is corrupt ({err})") from None
    meta = dict(reader.meta)
    ids = reader.array("ids")
    rows = Rows(np.zeros((len(ids), 0), np.float32), reader.strings("paths"),
                reader.array("pids"), reader.array("camids"))  # fmt: skip
    if not (index.ntotal == len(ids) == len(rows.paths) == len(rows.pids)):
        raise GalleryIndexError(f"{path}: the index and its labels disagree (corrupt index)")
    meta |= {"version": 2, "compact": {"max_segments": MAX_SEGMENTS, "max_deleted": MAX_DELETED}}
    quantizer = None
    if meta["kind"] == "ivfpq":
        quantizer = faiss.clone_index(index)
        quantizer.reset()  # trained lists and codebooks, no rows
    target = path.with_name(f".{path.name}.{os.getpid()}.upgrade")
    shutil.rmtree(target, ignore_errors=True)
    doc = {"meta": meta, "segments": [], "next_file": 0, "generation": 0, "quantizer": None}
    gallery = FaissGallery(target, doc, [], quantizer)
    if len(ids):
        gallery.segments.append(_segment(gallery, faiss, index, reader, ids, rows))
    gallery.save()
    os.rename(path, kept)
    os.rename(target, path)
    return {"index": str(path), "kind": meta["kind"], "count": len(ids), "kept": str(kept)}


def _segment(gallery, faiss, index, reader, ids, rows):
    from reidcli.index.segments import Stored, path_hashes

    data = {"ids": ids, "pids": rows.pids, "camids": rows.camids, "paths": rows.paths,
            "path_hash": path_hashes(rows.paths)}  # fmt: skip
    kind = reader.meta["kind"]
    if kind == "flat":
        data["vectors"] = index.reconstruct_batch(ids)
    elif kind == "hnsw":
        graph = faiss.downcast_index(index.index)
        order = faiss.vector_to_array(index.id_map)
        if np.array_equal(order, ids):  # a copy of the graph, owned by this process
            data["graph"] = faiss.deserialize_index(faiss.serialize_index(graph))
        else:  # rows added in another order than their ids: a graph in id order
            data |= gallery._payload(index.reconstruct_batch(ids))
    else:
        data["codes"] = _ivf_codes(faiss, index, ids)
        if "vectors" in reader.sections:
            data["vectors"] = reader.rows("vectors").read()
    return Stored(len(ids), int(ids[0]), int(ids[-1]), data=data)


def _ivf_codes(faiss, index, ids: np.ndarray) -> np.ndarray:
    """(N, sa_code_size) codes of an IndexIVFPQ's rows in `ids` order: each row's list number
    (little-endian, `coarse_code_size` bytes) then its PQ code, as `sa_encode` writes them."""
    invlists = index.invlists
    coarse, size = index.coarse_code_size(), index.code_size
    out = np.zeros((len(ids), coarse + size), dtype=np.uint8)
    order = np.argsort(ids)
    for number in range(index.nlist):
        n = invlists.list_size(number)
        if not n:
            continue
        own = faiss.rev_swig_ptr(invlists.get_ids(number), n).copy()
        codes = faiss.rev_swig_ptr(invlists.get_codes(number), n * size).copy().reshape(n, size)
        at = order[np.searchsorted(ids, own, sorter=order)]
        out[at, :coarse] = np.frombuffer(number.to_bytes(coarse, "little"), dtype=np.uint8)
        out[at, coarse:] = codes
    return out
