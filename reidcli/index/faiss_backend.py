"""The embedded backend: a faiss index and the rows' labels in one file (`reidcli.index.container`).

- `flat`: exact (IndexFlat under an id map).
- `hnsw`: a graph over the full vectors (IndexHNSWFlat under an id map); removing rows rebuilds
  the graph from the remaining vectors, so nothing of a removed row stays in the file.
- `ivfpq`: an inverted file of product-quantised codes (IndexIVFPQ). With `refine` > 0 the rows'
  float32 vectors are kept in the same file, read row by row rather than loaded, and
  the best K + (refine − 1)·min(K, 10) PQ candidates are re-scored exactly; the codes are all
  the index holds in memory.
"""

from __future__ import annotations

import math
import time

import numpy as np

from reidcli import __version__
from reidcli.errors import GalleryIndexError
from reidcli.index.container import DiskRows, Reader, atomic_write
from reidcli.index.gallery import UNKNOWN, Gallery, SearchParams, to_distance

FORMAT = "reid-index"
VERSION = 1


def import_faiss():
    """The faiss module, or an error naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise GalleryIndexError(
            "the faiss backend needs faiss-cpu: pip install 'reidcli[index]'"
        ) from None
    return faiss


def default_nlist(count: int) -> int:
    """A power of two near 4·√N, with at least 39 training rows per list."""
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(count))))
    return int(max(1, min(target, count // 39)))


def default_pq_m(dim: int) -> int:
    """Sub-quantizers: 8 dimensions each (64 bytes per 512-d row), dividing the width."""
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return m


class FaissGallery(Gallery):
    """A gallery in one faiss index file. Build with `build`, open with `open`."""

    def __init__(self, path, meta, index, ids, paths, pids, camids, vectors=None) -> None:
        self.path, self.meta, self.index = path, meta, index
        self.ids, self.paths, self.pids, self.camids = ids, paths, pids, camids
        # ivfpq with refine: (N, D) float32 rows in `ids` order, on disk once saved
        self.vectors: np.ndarray | DiskRows | None = vectors
        self.faiss = import_faiss()

    # -- creation ----------------------------------------------------------------------------
    @classmethod
    def build(cls, path, vectors: np.ndarray, meta: dict, seed: int) -> FaissGallery:
        """An empty trained index for `meta` (kind, metric, dim, params); `add` fills it."""
        faiss = import_faiss()
        dim, kind, params = meta["dim"], meta["kind"], meta["params"]
        metric = faiss.METRIC_INNER_PRODUCT if meta["metric"] == "cosine" else faiss.METRIC_L2
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlat(dim, metric))
        elif kind == "hnsw":
            index = faiss.IndexIDMap2(_hnsw(faiss, dim, params, metric))
        else:
            quantizer = faiss.IndexFlat(dim, metric)
            index = faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["pq_m"], 8, metric)
            index.own_fields = True
            quantizer.this.disown()
            rng = np.random.default_rng(seed)
            size = min(len(vectors), max(params["nlist"] * 40, 256 * 40))
            sample = np.sort(rng.choice(len(vectors), size, replace=False))
            index.cp.seed = index.pq.cp.seed = seed
            index.train(np.ascontiguousarray(vectors[sample]))
        empty = np.zeros(0, dtype=np.int64)
        keep = kind == "ivfpq" and params["refine"] > 0
        vectors = np.zeros((0, dim), np.float32) if keep else None
        return cls(path, meta, index, empty, np.zeros(0, dtype=object), empty, empty, vectors)

    @classmethod
    def open(cls, path) -> FaissGallery:
        reader = Reader(path)
        meta = reader.meta
        if meta.get("format") != FORMAT or meta.get("backend") != "faiss":
            raise GalleryIndexError(f"{path}: not a reid faiss index")
        if meta.get("version") != VERSION:
            raise GalleryIndexError(
                f"{path}: index format version {meta.get('version')}; this reid reads {VERSION}"
            )
        faiss = import_faiss()

        def read(chunk):
            return faiss.read_index(faiss.PyCallbackIOReader(chunk, 1 << 20))

        try:
            index = reader.stream("faiss", read)
        except RuntimeError as err:
            raise GalleryIndexError(f"{path}: the faiss index is corrupt ({err})") from None
        ids = reader.array("ids")
        pids, camids, paths = reader.array("pids"), reader.array("camids"), reader.strings("paths")
        vectors = reader.rows("vectors") if "vectors" in reader.sections else None
        n = len(ids)
        if not (index.ntotal == n == len(pids) == len(camids) == len(paths)) or (
            vectors is not None and vectors.shape != (n, meta["dim"])
        ):
            raise GalleryIndexError(f"{path}: the index and its labels disagree (corrupt index)")
        return cls(path, meta, index, ids, paths, pids, camids, vectors)

    def save(self) -> None:
        faiss = self.faiss
        self.meta |= {"count": self.count, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "reidcli": __version__, "faiss": faiss.__version__}  # fmt: skip
        with atomic_write(self.path) as out:
            out.stream("faiss", lambda h: faiss.write_index(self.index, _writer(faiss, h)))
            out.array("ids", self.ids)
            out.array("pids", self.pids)
            out.array("camids", self.camids)
            out.strings("paths", self.paths)
            if self.vectors is not None:
                out.array("vectors", _in_memory(self.vectors))
            out.finish(self.meta)
        if self.vectors is not None:  # read from the new file from now on
            self.vectors = Reader(self.path).rows("vectors")

    # -- labels ------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self.ids)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions in `self.ids` (and the label arrays) of existing row ids."""
        at = np.minimum(np.searchsorted(self.ids, ids), max(0, self.count - 1))
        if self.count == 0 or (self.ids[at] != ids).any():
            raise GalleryIndexError(f"{self.path}: row ids missing from the labels (corrupt?)")
        return at

    def labels(self, ids):
        ids = np.asarray(ids, dtype=np.int64)
        known = ids >= 0
        at = np.zeros(ids.shape, dtype=np.int64)
        if known.any():
            at[known] = self.positions(ids[known])
        paths = np.where(known, self.paths[at] if self.count else "", "")
        pids = np.where(known, self.pids[at] if self.count else UNKNOWN, UNKNOWN)
        camids = np.where(known, self.camids[at] if self.count else UNKNOWN, UNKNOWN)
        return paths, pids, camids

    def label_table(self):
        return self.pids, self.camids

    def ids_of(self, *, pid=None, paths=None):
        if pid is not None:
            return self.ids[self.pids == pid]
        return self.ids[np.isin(self.paths.astype(str), np.asarray(list(paths), dtype=str))]

    # -- backend -----------------------------------------------------------------------------
    def _set_params(self, params: SearchParams) -> None:
        defaults = self.meta["search"]
        if self.kind == "ivfpq":
            self.index.nprobe = params.nprobe or defaults["nprobe"]
        elif self.kind == "hnsw":
            inner = self.faiss.downcast_index(self.index.index)
            inner.hnsw.efSearch = params.ef_search or defaults["ef_search"]

    def _candidates(self, queries, k, params):
        self._set_params(params)
        if self.kind == "ivfpq":
            # fewer queries than threads: split each query's lists across the threads instead
            few = len(queries) < self.faiss.omp_get_max_threads()
            self.index.parallel_mode = 1 if few else 0
        values, ids = self.index.search(np.ascontiguousarray(queries), k)
        return ids, to_distance(values.astype(np.float64), self.metric)

    def _vectors(self, ids):
        if self.kind in ("flat", "hnsw"):
            flat = self._reconstruct(ids.ravel())
            return flat.reshape(*ids.shape, self.dim)
        if self.vectors is None:
            return None
        return _take(self.vectors, self.positions(ids.ravel())).reshape(*ids.shape, self.dim)

    def _reconstruct(self, ids):
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.kind in ("flat", "hnsw"):
            return self.index.reconstruct_batch(ids)
        if self.vectors is not None:
            return _take(self.vectors, self.positions(ids))
        self.index.set_direct_map_type(self.faiss.DirectMap.Hashtable)
        try:
            return self.index.reconstruct_batch(ids)
        finally:
            self.index.set_direct_map_type(self.faiss.DirectMap.NoMap)

    def _add(self, vectors, ids, rows):
        self.index.add_with_ids(vectors, ids)
        if self.vectors is not None:
            self.vectors = np.concatenate([_in_memory(self.vectors), vectors])
        self.ids = np.concatenate([self.ids, ids])
        self.paths = np.concatenate([self.paths, np.asarray(rows.paths, dtype=object)])
        self.pids = np.concatenate([self.pids, rows.pids])
        self.camids = np.concatenate([self.camids, rows.camids])

    def _remove(self, ids):
        self._remove_vectors(ids)
        keep = ~np.isin(self.ids, ids)
        self.ids, self.paths = self.ids[keep], self.paths[keep]
        self.pids, self.camids = self.pids[keep], self.camids[keep]

    def _remove_vectors(self, ids):
        selector = self.faiss.IDSelectorBatch(ids)
        if self.kind == "hnsw":  # no deletion in an HNSW graph: rebuild it without the rows
            keep = ~np.isin(self.ids, ids)
            kept_ids = self.ids[keep]
            vectors = self.index.reconstruct_batch(kept_ids) if kept_ids.size else None
            metric = self.index.metric_type
            graph = _hnsw(self.faiss, self.dim, self.meta["params"], metric)
            self.index = self.faiss.IndexIDMap2(graph)
            if vectors is not None:
                self.index.add_with_ids(vectors, kept_ids)
            return
        removed = self.index.remove_ids(selector)
        if removed != len(ids):
            raise GalleryIndexError(f"the index removed {removed} of {len(ids)} rows")
        if self.vectors is not None:
            self.vectors = _in_memory(self.vectors)[~np.isin(self.ids, ids)]

    def _all_vectors(self):
        if self.kind == "hnsw" and self.count:
            return self.ids, self.index.reconstruct_batch(self.ids)
        return None

    def memory_bytes(self) -> int:
        """Bytes of the faiss index as written to the file (about what it holds in memory)."""
        return int(Reader(self.path).sections["faiss"]["nbytes"])


def _hnsw(faiss, dim, params, metric):
    index = faiss.IndexHNSWFlat(dim, params["hnsw_m"], metric)
    index.hnsw.efConstruction = params["ef_construction"]
    return index


def _writer(faiss, handle):
    return faiss.PyCallbackIOWriter(handle.write)


def _in_memory(vectors) -> np.ndarray:
    return vectors.read() if isinstance(vectors, DiskRows) else vectors


def _take(vectors, positions: np.ndarray) -> np.ndarray:
    return vectors.take(positions) if isinstance(vectors, DiskRows) else vectors[positions]
