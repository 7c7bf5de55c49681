"""The embedded backend: a faiss gallery in an index folder of segments (`reidcli.index.segments`).

Each `add` writes one new segment and each `remove` deletion lists; nothing written before is
rewritten, except by compaction (`compact`, or on its own past the index's thresholds) and by
`remove --purge`. Per kind:

- `flat`: a segment keeps its float32 rows; an open gallery holds every live row in one
  IndexFlat, so a search of many segments is the search of one flat index of all rows.
- `hnsw`: a segment keeps its own graph over its rows (IndexHNSWFlat); a search asks every
  segment's graph (deleted rows excluded by a selector) and merges the answers. Compaction
  builds one graph of the merged rows.
- `ivfpq`: the quantizer (IVF lists and PQ codebooks) is trained once, at build, and kept in
  the folder; a segment keeps its rows' codes under it (and, with `refine` > 0, their float32
  rows, read row by row for the exact re-scoring of the best K + (refine − 1)·min(K, 10) PQ
  candidates). An open gallery holds every live code in one IndexIVFPQ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reidcli.errors import GalleryIndexError
from reidcli.index import segments as store
from reidcli.index.container import gather
from reidcli.index.faiss_common import (
    MAX_DELETED,
    MAX_SEGMENTS,
    default_nlist,
    import_faiss,
    train_quantizer,
)
from reidcli.index.gallery import UNKNOWN, Gallery, to_distance
from reidcli.index.segment_writer import SegmentWriter
from reidcli.index.segments import Stored, path_hashes

# `reid index info` flags an IVF-PQ quantizer trained on fewer rows than the index holds by
# this factor.
STALE_FACTOR = 4


class FaissGallery(SegmentWriter, Gallery):
    """A gallery in an index folder. Build with `build`, open with `open`."""

    def __init__(self, path: Path, doc: dict, segments: list[Stored], quantizer=None) -> None:
        self.path, self.doc, self.meta = path, doc, doc["meta"]
        self.segments = segments
        self.faiss = import_faiss()
        self.quantizer = quantizer  # ivfpq: the trained, empty index
        self._index = None  # flat / ivfpq: every live row in one faiss index, built when needed
        self._graphs: dict[int, object] = {}  # hnsw: id(segment) -> its graph
        self._labels: tuple | None = None  # (ids, paths, pids, camids) of the live rows
        self.compacted: list[str] = []  # what the last save merged or rewrote, and why

    # -- creation ----------------------------------------------------------------------------
    @classmethod
    def build(cls, path, vectors: np.ndarray, meta: dict, seed: int) -> FaissGallery:
        """An empty gallery for `meta` (kind, metric, dim, params); `add` fills it, `save` writes
        it. IVF-PQ trains its quantizer on `vectors` here."""
        faiss = import_faiss()
        quantizer = None
        if meta["kind"] == "ivfpq":
            quantizer, trained = train_quantizer(faiss, vectors, meta, seed)
            meta["params"]["trained_rows"] = int(trained)
        meta.setdefault("compact", {"max_segments": MAX_SEGMENTS, "max_deleted": MAX_DELETED})
        doc = {"meta": meta, "segments": [], "next_file": 0, "generation": 0, "quantizer": None}
        return cls(Path(path), doc, [], quantizer)

    @classmethod
    def open(cls, path) -> FaissGallery:
        """The gallery of an index folder, every file of one manifest opened.

        Raises:
            GalleryIndexError: no such index, a damaged one, or one in the single-file format
                of earlier versions (the error names the command converting it).
        """
        path = Path(path)
        if path.is_file():
            from reidcli.index.legacy import refuse_legacy

            refuse_legacy(path)
        if not path.exists():
            raise GalleryIndexError(f"{path}: no such index")
        faiss = import_faiss()
        doc, segments = store.open_segments(path)
        raw = doc.pop("quantizer_bytes", None)
        if doc["meta"].get("backend") != "faiss":
            raise GalleryIndexError(f"{path}: not a reid faiss index")
        quantizer = None
        if raw is not None:
            try:
                quantizer = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
            except RuntimeError as err:
                raise GalleryIndexError(f"{path}: the quantizer is corrupt ({err})") from None
        elif doc["meta"]["kind"] == "ivfpq":
            raise GalleryIndexError(f"{path}: an IVF-PQ index without its quantizer (corrupt)")
        for segment in segments:
            ids = segment.array("ids")
            if len(ids) != segment.rows or (
                len(ids) and (ids[0] != segment.first_id or ids[-1] != segment.last_id)
            ):
                raise GalleryIndexError(f"{path}: {segment.file} disagrees with the manifest")
        return cls(path, doc, segments, quantizer)

    # -- labels ------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return int(sum(segment.live_rows for segment in self.segments))

    def _label_arrays(self) -> tuple:
        if self._labels is None:
            parts: list[list] = [[], [], [], []]
            for segment in self.segments:
                live = segment.live()
                for out, name in zip(parts, ("ids", "paths", "pids", "camids"), strict=True):
                    out.append(segment.array(name, keep=False)[live])
            empty = np.zeros(0, dtype=np.int64)
            self._labels = (
                np.concatenate(parts[0]) if parts[0] else empty,
                np.concatenate(parts[1]) if parts[1] else np.zeros(0, dtype=object),
                np.concatenate(parts[2]) if parts[2] else empty,
                np.concatenate(parts[3]) if parts[3] else empty,
            )
        return self._labels

    @property
    def ids(self) -> np.ndarray:
        return self._label_arrays()[0]

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions in the live rows' label arrays of existing row ids."""
        own = self.ids
        at = np.minimum(np.searchsorted(own, ids), max(0, len(own) - 1))
        if len(own) == 0 or (own[at] != ids).any():
            raise GalleryIndexError(f"{self.path}: row ids missing from the labels (corrupt?)")
        return at

    def labels(self, ids):
        own, paths, pids, camids = self._label_arrays()
        ids = np.asarray(ids, dtype=np.int64)
        known = ids >= 0
        at = np.zeros(ids.shape, dtype=np.int64)
        if known.any():
            at[known] = self.positions(ids[known])
        some = len(own) > 0
        return (
            np.where(known, paths[at] if some else "", ""),
            np.where(known, pids[at] if some else UNKNOWN, UNKNOWN),
            np.where(known, camids[at] if some else UNKNOWN, UNKNOWN),
        )

    def label_table(self):
        _, _, pids, camids = self._label_arrays()
        return pids, camids

    def ids_of(self, *, pid=None, paths=None):
        if pid is not None:
            own, _, pids, _ = self._label_arrays()
            return own[pids == pid]
        wanted = [str(p) for p in paths]
        hashes, names = path_hashes(wanted), set(wanted)
        found = []
        for segment in self.segments:  # 8 bytes a row, then only the candidates' paths
            hit = np.flatnonzero(np.isin(segment.array("path_hash"), hashes))
            hit = hit[segment.live()[hit]]
            if hit.size:
                same = np.array([p in names for p in segment.paths_at(hit)], dtype=bool)
                found.append(segment.array("ids")[hit[same]])
        return np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    # -- backend -----------------------------------------------------------------------------
    def _faiss_metric(self):
        faiss = self.faiss
        return faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2

    def _search_index(self):
        """flat / ivfpq: one faiss index of every live row (built on first use)."""
        if self._index is None:
            if self.kind == "flat":
                index = self.faiss.IndexIDMap2(self.faiss.IndexFlat(self.dim, self._faiss_metric()))
            else:
                index = self.faiss.clone_index(self.quantizer)
            for segment in self.segments:
                self._index_add(index, segment)
            self._index = index
        return self._index

    def _index_add(self, index, segment: Stored) -> None:
        live = segment.live()
        ids = np.ascontiguousarray(segment.array("ids")[live])
        if not len(ids):
            return
        name = "vectors" if self.kind == "flat" else "codes"
        values = segment.array(name, keep=False)
        values = np.ascontiguousarray(values if live.all() else values[live])
        if self.kind == "flat":
            index.add_with_ids(values, ids)
        else:
            index.add_sa_codes(values, ids)

    def _graph(self, segment: Stored):
        if "graph" in segment.data:
            return segment.data["graph"]
        graph = self._graphs.get(id(segment))
        if graph is None:
            faiss = self.faiss

            def read(chunk):
                return faiss.read_index(faiss.PyCallbackIOReader(chunk, 1 << 20))

            try:
                graph = segment.reader.stream("graph", read)
            except RuntimeError as err:
                raise GalleryIndexError(f"{segment.file}: the graph is corrupt ({err})") from None
            self._graphs[id(segment)] = graph
        return graph

    def _candidates(self, queries, k, params):
        queries = np.ascontiguousarray(queries)
        if self.kind == "hnsw":
            return self._graph_candidates(queries, k, params)
        index = self._search_index()
        if self.kind == "ivfpq":
            index.nprobe = params.nprobe or self.meta["search"]["nprobe"]
            # fewer queries than threads: split each query's lists across the threads instead
            index.parallel_mode = 1 if len(queries) < self.faiss.omp_get_max_threads() else 0
        values, ids = index.search(queries, k)
        return ids, to_distance(values.astype(np.float64), self.metric)

    def _graph_candidates(self, queries, k, params):
        """Every segment's graph searched (deleted rows excluded), the answers merged."""
        faiss = self.faiss
        ef = params.ef_search or self.meta["search"]["ef_search"]
        found_ids, found_dist = [], []
        for segment in self.segments:
            if segment.live_rows == 0:
                continue
            search = faiss.SearchParametersHNSW()
            search.efSearch = ef
            if len(segment.deleted):
                bits = np.packbits(segment.live(), bitorder="little")
                selector = faiss.IDSelectorBitmap(segment.rows, faiss.swig_ptr(bits))
                search.sel = selector
            values, local = self._graph(segment).search(
                queries, min(k, segment.live_rows), params=search
            )
            own = segment.array("ids")
            found_ids.append(np.where(local >= 0, own[np.maximum(local, 0)], -1))
            found_dist.append(to_distance(values.astype(np.float64), self.metric))
        if not found_ids:
            return np.full((len(queries), k), -1, np.int64), np.full((len(queries), k), np.nan)
        ids, dist = np.concatenate(found_ids, 1), np.concatenate(found_dist, 1)
        dist = np.where(ids < 0, np.inf, dist)
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        ids, dist = np.take_along_axis(ids, order, 1), np.take_along_axis(dist, order, 1)
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
        return ids, np.where(ids < 0, np.nan, dist)

    def _segment_rows(self, ids: np.ndarray, fetch, requests: list | None = None) -> np.ndarray:
        """(n, D) rows of row ids, `fetch(segment, positions in it)` per segment holding some
        (when `fetch` appends to `requests`, the rows of `out` it is for are added there)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        firsts = np.array([segment.first_id for segment in self.segments], dtype=np.int64)
        which = np.searchsorted(firsts, ids, side="right") - 1
        for at in np.unique(which):
            chosen = which == at
            segment = self.segments[max(0, int(at))]
            own = segment.array("ids")
            positions = np.minimum(np.searchsorted(own, ids[chosen]), len(own) - 1)
            if at < 0 or (own[positions] != ids[chosen]).any():
                raise GalleryIndexError(
                    f"{self.path}: row ids missing from the segments (corrupt?)"
                )
            asked = len(requests) if requests is not None else 0
            out[chosen] = fetch(segment, positions)
            if requests is not None and len(requests) > asked:
                requests[-1] = (*requests[-1], np.flatnonzero(chosen))
        return out

    def _refine_rows(self, ids: np.ndarray) -> np.ndarray:
        """IVF-PQ's float32 rows of row ids: new segments' from memory, the others' read from
        their files in one batch of concurrent reads (`container.gather`)."""
        requests = []

        def fetch(segment: Stored, positions: np.ndarray) -> np.ndarray:
            if "vectors" in segment.data:
                return segment.data["vectors"][positions]
            rows = segment._cache.get("rows")
            if rows is None:
                rows = segment._cache["rows"] = segment.reader.rows("vectors")
            requests.append((rows, positions))
            return np.zeros((len(positions), self.dim), np.float32)  # read below

        out = self._segment_rows(ids, fetch, requests)
        gather(out, [(rows, positions, slots) for rows, positions, slots in requests])
        return out

    def _vectors(self, ids):
        if self.kind == "ivfpq" and self.meta["params"].get("refine", 0) <= 0:
            return None
        return self._reconstruct(ids.ravel()).reshape(*ids.shape, self.dim)

    def _reconstruct(self, ids):
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.kind == "flat":
            return self._search_index().reconstruct_batch(ids)
        if self.kind == "hnsw":
            return self._segment_rows(
                ids, lambda segment, at: self._graph(segment).reconstruct_batch(at)
            )
        if self.meta["params"].get("refine", 0) > 0:
            return self._refine_rows(ids)
        return self._segment_rows(  # decoded from the PQ codes
            ids, lambda segment, at: self.quantizer.sa_decode(
                np.ascontiguousarray(segment.array("codes")[at]))
        )  # fmt: skip

    def _add(self, vectors, ids, rows):
        segment = self._segment_of(vectors, ids, rows)
        self.segments.append(segment)
        if self._index is not None:
            self._index_add(self._index, segment)
        if self._labels is not None:
            own, paths, pids, camids = self._labels
            data = segment.data
            self._labels = (np.concatenate([own, data["ids"]]),
                            np.concatenate([paths, data["paths"]]),
                            np.concatenate([pids, data["pids"]]),
                            np.concatenate([camids, data["camids"]]))  # fmt: skip

    def _remove(self, ids):
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        for segment in self.segments:
            inside = ids[(ids >= segment.first_id) & (ids <= segment.last_id)]
            if inside.size:
                segment.deleted = np.union1d(segment.deleted, inside)
                segment.changed = True
                segment._cache.pop("live", None)
        if self._index is not None:
            removed = self._index.remove_ids(self.faiss.IDSelectorBatch(ids))
            if removed != len(ids):
                raise GalleryIndexError(f"the index removed {removed} of {len(ids)} rows")
        if self._labels is not None:
            keep = ~np.isin(self._labels[0], ids)
            self._labels = tuple(values[keep] for values in self._labels)

    def _all_vectors(self):
        if self.kind == "hnsw" and self.count:
            return self.ids, self._reconstruct(self.ids)
        return None

    # -- description -------------------------------------------------------------------------
    def memory_bytes(self) -> int:
        """Bytes of the searchable payload as stored (vectors, codes or graphs, and the
        quantizer): about what an open gallery holds in memory for searching."""
        total = 0
        for segment in self.segments:
            if segment.reader is not None:
                for name in ("vectors", "codes", "graph"):
                    if name in segment.reader.sections and not (
                        name == "vectors" and self.kind == "ivfpq"
                    ):
                        total += int(segment.reader.sections[name]["nbytes"])
        if self.doc.get("quantizer"):
            total += (self.path / self.doc["quantizer"]).stat().st_size
        return total

    def describe(self) -> dict:
        """What `reid index info` adds for a folder: segments, deleted rows, bytes on disk,
        and a note when an IVF-PQ quantizer was trained on far fewer rows than the index holds."""
        on_disk = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        out = {
            "segments": [segment.entry() for segment in self.segments],
            "deleted": int(sum(len(segment.deleted) for segment in self.segments)),
            "bytes_on_disk": int(on_disk),
        }
        trained = self.meta["params"].get("trained_rows")
        if self.kind == "ivfpq" and trained and self.count > STALE_FACTOR * trained:
            out["quantizer_note"] = (
                f"the quantizer was trained on {trained} rows; the index holds {self.count}. "
                f"`reid index rebuild {self.path} --dry-run` measures the recall@10 of a "
                f"retrained one ({default_nlist(self.count)} lists) beside this one's"
            )
        return out
