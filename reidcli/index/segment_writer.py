"""Writing an index folder: new segments, deletion lists and the manifest (`save`), and
compaction (merging segments, dropping deleted rows), as `FaissGallery` does them."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np

from reidcli import __version__
from reidcli.index import segments as store
from reidcli.index.container import Reader, atomic_write
from reidcli.index.faiss_common import LABELS, faiss_writer, hnsw_graph
from reidcli.index.segments import Stored, path_hashes


class SegmentWriter:
    """The writing half of `FaissGallery` (its state: path, doc, meta, segments, quantizer,
    faiss, compacted, _graphs; its `_graph(segment)`)."""

    # -- writing -----------------------------------------------------------------------------
    def save(self) -> None:
        """Write what changed (new segments, deletion lists, merges), then the new manifest.

        A new index is written in a temporary folder beside its path and renamed into place."""
        faiss = self.faiss
        self.meta |= {"count": self.count, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "reidcli": __version__, "faiss": faiss.__version__}  # fmt: skip
        self.compacted += self._auto_compact()
        final = self.path
        fresh = not final.exists()
        folder = final.with_name(f".{final.name}.{os.getpid()}.building") if fresh else final
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        self.path = folder
        try:
            if self.quantizer is not None and not self.doc.get("quantizer"):
                name = self._new_name("quantizer", "faiss")
                store.write_bytes_file(folder / name, faiss.serialize_index(self.quantizer))
                self.doc["quantizer"] = name
            for segment in self.segments:
                if segment.file is None:
                    self._write_segment(segment)
                if segment.changed:
                    self._write_deleted(segment)
            self.doc["segments"] = [segment.entry() for segment in self.segments]
            self.doc["generation"] = int(self.doc.get("generation", 0)) + 1
            store.write_manifest(folder, self.doc)
            if fresh:
                folder.rename(final)
                store.fsync_folder(final.parent)
        finally:
            self.path = final
        store.remove_unnamed(final, self.doc)

    def _new_name(self, stem: str, suffix: str) -> str:
        number = int(self.doc.get("next_file", 0))
        while True:
            name = f"{stem}-{number:08d}.{suffix}"
            number += 1
            if not (self.path / name).exists():
                self.doc["next_file"] = number
                return name

    def _write_segment(self, segment: Stored) -> None:
        name = self._new_name("seg", "rseg")
        faiss, data = self.faiss, segment.data
        with atomic_write(self.path / name) as out:
            for label in LABELS:
                if label == "paths":
                    out.strings("paths", data["paths"])
                else:
                    out.array(label, data[label])
            for section in ("vectors", "codes"):
                if section in data:
                    out.array(section, data[section])
            if "graph" in data:
                graph = data["graph"]
                out.stream("graph", lambda h: faiss.write_index(graph, faiss_writer(faiss, h)))
            out.finish({"rows": segment.rows, "kind": self.kind})
        segment.file = name
        segment.bytes = (self.path / name).stat().st_size
        segment.reader = Reader(self.path / name)

    def _write_deleted(self, segment: Stored) -> None:
        if len(segment.deleted):
            name = self._new_name("del", "npy")
            store.write_array_file(self.path / name, segment.deleted)
            segment.deleted_file = name
        else:
            segment.deleted_file = None
        segment.changed = False

    # -- segments ----------------------------------------------------------------------------
    def _segment_of(self, vectors: np.ndarray, ids: np.ndarray, rows) -> Stored:
        """A new segment (in memory until saved) of prepared vectors and their labels."""
        paths = np.asarray(rows.paths, dtype=object)
        data = {"ids": ids, "pids": np.asarray(rows.pids, dtype=np.int64),
                "camids": np.asarray(rows.camids, dtype=np.int64), "paths": paths,
                "path_hash": path_hashes(paths)}  # fmt: skip
        data |= self._payload(vectors)
        return Stored(len(ids), int(ids[0]), int(ids[-1]), data=data)

    def _payload(self, vectors: np.ndarray) -> dict:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.kind == "flat":
            return {"vectors": vectors}
        if self.kind == "hnsw":
            graph = hnsw_graph(self.faiss, self.dim, self.meta["params"], self._faiss_metric())
            graph.add(vectors)
            return {"graph": graph}
        out = {"codes": self.quantizer.sa_encode(vectors)}
        if self.meta["params"].get("refine", 0) > 0:
            out["vectors"] = vectors
        return out

    def _merged(self, parts: list[Stored]) -> Stored | None:
        """One new segment of the live rows of `parts` (adjacent, in order); None when none."""
        labels: dict[str, list] = {name: [] for name in LABELS}
        vectors, codes = [], []
        for part in parts:
            live = part.live()
            for name in LABELS:
                labels[name].append(part.array(name, keep=False)[live])
            if self.kind == "hnsw":
                vectors.append(self._graph(part).reconstruct_batch(np.flatnonzero(live)))
            elif part.has("vectors"):
                vectors.append(part.array("vectors", keep=False)[live])
            if self.kind == "ivfpq":
                codes.append(part.array("codes", keep=False)[live])
        data = {name: np.concatenate(values) for name, values in labels.items()}
        if not len(data["ids"]):
            return None
        if self.kind == "hnsw":
            data |= self._payload(np.concatenate(vectors))
        else:
            if vectors:
                data["vectors"] = np.concatenate(vectors)
            if codes:
                data["codes"] = np.concatenate(codes)
        ids = data["ids"]
        return Stored(len(ids), int(ids[0]), int(ids[-1]), data=data)

    def _replace(self, start: int, stop: int, why: str) -> str:
        """Segments [start, stop) replaced by one of their live rows; what was done."""
        parts = self.segments[start:stop]
        merged = self._merged(parts)
        self.segments[start:stop] = [merged] if merged is not None else []
        for part in parts:
            self._graphs.pop(id(part), None)
        dropped = sum(len(part.deleted) for part in parts)
        rows = merged.rows if merged is not None else 0
        return (
            f"{len(parts)} segment(s) into one of {rows} rows ({dropped} deleted rows dropped): "
            f"{why}"
        )

    def _auto_compact(self) -> list[str]:
        """Compaction past the index's thresholds (`meta["compact"]`)."""
        rules = self.meta.get("compact") or {}
        done = []
        share = rules.get("max_deleted")
        if share:
            for at in range(len(self.segments) - 1, -1, -1):
                segment = self.segments[at]
                if len(segment.deleted) > share * segment.rows:
                    done.append(self._replace(at, at + 1, f"over {share:.0%} of it deleted"))
        limit = rules.get("max_segments")
        while limit and len(self.segments) > limit:
            width = max(2, limit // 2)
            sizes = np.array([segment.live_rows for segment in self.segments])
            totals = np.convolve(sizes, np.ones(width, dtype=np.int64), mode="valid")
            start = int(len(totals) - 1 - np.argmin(totals[::-1]))  # fewest rows, latest
            done.append(self._replace(start, start + width, f"over {limit} segments"))
        return done

    def compact(self) -> list[str]:
        """Every segment merged into one, deleted rows dropped; the caller saves."""
        if len(self.segments) <= 1 and not any(len(s.deleted) for s in self.segments):
            return []
        done = [self._replace(0, len(self.segments), "reid index compact")]
        self.compacted += done
        return done

    def purge(self) -> list[str]:
        """Every segment holding deleted rows rewritten without them; the caller saves. Their
        previous files are removed once the new manifest is written."""
        done = []
        for at in range(len(self.segments) - 1, -1, -1):
            segment = self.segments[at]
            if len(segment.deleted):
                before = segment.file
                done.append(f"{before}: " + self._replace(at, at + 1, "purge"))
        self.compacted += done
        return done
