"""The scale-out backend: a Milvus collection (server, cluster, or a Milvus Lite file).

Each row is stored with its vector, path, pid and camid under its row id; the gallery's
metadata lives in a one-row companion collection `<name>__reid_meta`. The index types map to
Milvus's FLAT, HNSW and IVF_PQ; distances and the exact re-scoring are those of the faiss
backend (`reidcli.index.gallery`), so both return the same hits for the same data.
"""

from __future__ import annotations

import json

import numpy as np

from reidcli.errors import GalleryIndexError
from reidcli.index.gallery import UNKNOWN, Gallery, to_distance

META_SUFFIX = "__reid_meta"
BUILDING_SUFFIX = "__reid_building"
MAX_PATH = 4096
BATCH = 1000
FIELDS = ["path", "pid", "camid"]


def import_pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise GalleryIndexError(
            "the Milvus backend needs pymilvus (and milvus-lite for a local file): "
            "pip install 'reidcli[milvus]'"
        ) from None
    return pymilvus


def connect(uri: str):
    pymilvus = import_pymilvus()
    try:
        return pymilvus.MilvusClient(uri)
    except Exception as err:  # the client raises many kinds (connection, lite start-up)
        raise GalleryIndexError(f"cannot reach Milvus at {uri}: {err}") from None


class MilvusGallery(Gallery):
    """A gallery in a Milvus collection. Create with `create`, open with `open`."""

    max_fetch = 16384  # Milvus's largest search limit

    def __init__(self, client, uri: str, name: str, meta: dict) -> None:
        self.client, self.uri, self.name, self.meta = client, uri, name, meta
        self.location = f"{uri}#{name}"
        self.final_name: str | None = None
        self._cache: dict[int, tuple[str, int, int]] = {}

    @classmethod
    def create(cls, uri: str, name: str, meta: dict, overwrite: bool = False) -> MilvusGallery:
        pymilvus = import_pymilvus()
        client = connect(uri)
        if client.has_collection(name) and not overwrite:
            raise GalleryIndexError(f"{uri}: collection {name} exists; pass --overwrite")
        dtype = pymilvus.DataType
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", dtype.INT64, is_primary=True)
        schema.add_field("vec", dtype.FLOAT_VECTOR, dim=meta["dim"])
        schema.add_field("path", dtype.VARCHAR, max_length=MAX_PATH)
        schema.add_field("pid", dtype.INT64)
        schema.add_field("camid", dtype.INT64)
        index = client.prepare_index_params()
        index.add_index(field_name="vec", metric_type=_metric(meta), **_index_spec(meta))
        building = name + BUILDING_SUFFIX
        for stale in (building, building + META_SUFFIX):
            if client.has_collection(stale):
                client.drop_collection(stale)
        client.create_collection(
            building, schema=schema, index_params=index, consistency_level="Strong"
        )
        side = client.create_schema(auto_id=False, enable_dynamic_field=False)
        side.add_field("id", dtype.INT64, is_primary=True)
        side.add_field("doc", dtype.VARCHAR, max_length=65535)
        side.add_field("v", dtype.FLOAT_VECTOR, dim=2)
        side_index = client.prepare_index_params()
        side_index.add_index(field_name="v", index_type="FLAT", metric_type="L2")
        client.create_collection(
            building + META_SUFFIX, schema=side, index_params=side_index, consistency_level="Strong"
        )
        gallery = cls(client, uri, building, meta)
        gallery.final_name = name
        gallery.location = f"{uri}#{name}"
        return gallery

    @classmethod
    def open(cls, uri: str, name: str) -> MilvusGallery:
        client = connect(uri)
        if not client.has_collection(name) or not client.has_collection(name + META_SUFFIX):
            raise GalleryIndexError(f"{uri}: no reid gallery named {name}")
        for collection in (name, name + META_SUFFIX):
            client.load_collection(collection)
        rows = client.query(name + META_SUFFIX, ids=[0], output_fields=["doc"])
        if not rows:
            raise GalleryIndexError(f"{uri}: gallery {name} has no metadata (corrupt)")
        return cls(client, uri, name, json.loads(rows[0]["doc"]))

    def _write_meta(self) -> None:
        doc = {"id": 0, "doc": json.dumps(self.meta), "v": [0.0, 0.0]}
        self.client.upsert(self.name + META_SUFFIX, [doc])

    def save(self) -> None:
        self.meta["count"] = self.count
        self._write_meta()
        final = getattr(self, "final_name", None)
        if final is not None:  # a finished build replaces the old collection only now
            for suffix in ("", META_SUFFIX):
                if self.client.has_collection(final + suffix):
                    self.client.drop_collection(final + suffix)
            for suffix in ("", META_SUFFIX):
                self.client.rename_collection(self.name + suffix, final + suffix)
            for suffix in ("", META_SUFFIX):
                self.client.load_collection(final + suffix)  # a renamed collection is released
            self.name, self.location, self.final_name = final, f"{self.uri}#{final}", None

    # -- labels ------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        rows = self.client.query(self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _fetch(self, ids: np.ndarray, fields: list[str]) -> dict[int, dict]:
        out: dict[int, dict] = {}
        unique = np.unique(ids[ids >= 0]).tolist()
        for start in range(0, len(unique), BATCH):
            chunk = unique[start : start + BATCH]
            for row in self.client.query(self.name, ids=chunk, output_fields=fields):
                out[int(row["id"])] = row
        return out

    def labels(self, ids):
        ids = np.asarray(ids, dtype=np.int64)
        missing = np.array([i for i in np.unique(ids[ids >= 0]) if int(i) not in self._cache])
        if missing.size:
            for key, row in self._fetch(missing, FIELDS).items():
                self._cache[key] = (row["path"], int(row["pid"]), int(row["camid"]))
        blank = ("", UNKNOWN, UNKNOWN)
        table = [self._cache.get(int(i), blank) if i >= 0 else blank for i in ids.ravel()]
        paths = np.array([t[0] for t in table], dtype=object).reshape(ids.shape)
        pids = np.array([t[1] for t in table], dtype=np.int64).reshape(ids.shape)
        camids = np.array([t[2] for t in table], dtype=np.int64).reshape(ids.shape)
        return paths, pids, camids

    def label_table(self):
        pids: list[int] = []
        camids: list[int] = []
        rows = self.client.query_iterator(self.name, batch_size=BATCH, filter="",
                                          output_fields=["pid", "camid"])  # fmt: skip
        try:
            while batch := rows.next():
                pids += [int(r["pid"]) for r in batch]
                camids += [int(r["camid"]) for r in batch]
        finally:
            rows.close()
        return np.array(pids, dtype=np.int64), np.array(camids, dtype=np.int64)

    def ids_of(self, *, pid=None, paths=None):
        if pid is not None:
            rows = self.client.query(self.name, filter=f"pid == {int(pid)}", output_fields=["id"])
            return np.array(sorted(int(r["id"]) for r in rows), dtype=np.int64)
        found: list[int] = []
        paths = list(paths)
        for start in range(0, len(paths), BATCH):
            chunk = json.dumps(paths[start : start + BATCH], ensure_ascii=False)
            rows = self.client.query(self.name, filter=f"path in {chunk}", output_fields=["id"])
            found += [int(r["id"]) for r in rows]
        return np.array(sorted(found), dtype=np.int64)

    # -- backend -----------------------------------------------------------------------------
    def _candidates(self, queries, k, params):
        defaults = self.meta["search"]
        knobs = {}
        if self.kind == "ivfpq":
            knobs = {"nprobe": params.nprobe or defaults["nprobe"]}
        elif self.kind == "hnsw":
            knobs = {"ef": max(k, params.ef_search or defaults["ef_search"])}
        found = self.client.search(
            self.name, data=[q.tolist() for q in queries], limit=k, output_fields=FIELDS,
            search_params={"metric_type": _metric(self.meta), "params": knobs},
        )  # fmt: skip
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        values = np.full((len(queries), k), np.nan)
        for row, hits in enumerate(found):
            for j, hit in enumerate(hits[:k]):
                ids[row, j], values[row, j] = hit["id"], hit["distance"]
                entity = hit["entity"]
                self._cache[int(hit["id"])] = (entity["path"], entity["pid"], entity["camid"])
        return ids, to_distance(values, self.metric)

    def _vectors(self, ids):
        if self.kind == "ivfpq" and not self.meta["params"].get("refine", 0):
            return None
        return self._reconstruct(ids.ravel()).reshape(*ids.shape, self.dim)

    def _reconstruct(self, ids):
        rows = self._fetch(np.asarray(ids), ["vec"])
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for j, i in enumerate(np.asarray(ids).tolist()):
            if i in rows:
                out[j] = rows[i]["vec"]
        return out

    def _add(self, vectors, ids, rows):
        for path in rows.paths:
            try:
                size = len(str(path).encode("utf-8"))
            except UnicodeEncodeError:
                raise GalleryIndexError(f"Milvus stores UTF-8 paths only: {path!r}") from None
            if size > MAX_PATH:
                raise GalleryIndexError(f"path longer than {MAX_PATH} bytes: {path[:80]}...")
        # reserve the ids first: an interrupted insert never leads to an id used twice
        stored = self.client.query(self.name + META_SUFFIX, ids=[0], output_fields=["doc"])
        if stored and int(json.loads(stored[0]["doc"])["next_id"]) > int(ids[0]):
            raise GalleryIndexError(
                f"{self.location} changed while this add ran (another writer): run it again"
            )
        self.meta["next_id"] = max(int(self.meta["next_id"]), int(ids[-1]) + 1)
        self._write_meta()
        done: list[int] = []
        try:
            for start in range(0, len(ids), BATCH):
                part = slice(start, start + BATCH)
                batch = [
                    {"id": int(i), "vec": v, "path": str(p), "pid": int(a), "camid": int(c)}
                    for i, v, p, a, c in zip(ids[part], vectors[part], rows.paths[part],
                                             rows.pids[part], rows.camids[part], strict=True)
                ]  # fmt: skip
                self.client.insert(self.name, batch)
                done += [int(i) for i in ids[part]]
        except BaseException:
            if done:  # leave the collection as it was
                self.client.delete(self.name, ids=done)
            raise

    def _remove(self, ids):
        for start in range(0, len(ids), BATCH):
            self.client.delete(self.name, ids=[int(i) for i in ids[start : start + BATCH]])
        for i in ids.tolist():
            self._cache.pop(i, None)
        if self._fetch(ids, ["id"]):
            raise GalleryIndexError("Milvus still returns removed rows")


def _metric(meta: dict) -> str:
    return "IP" if meta["metric"] == "cosine" else "L2"


def _index_spec(meta: dict) -> dict:
    params = meta["params"]
    if meta["kind"] == "flat":
        return {"index_type": "FLAT"}
    if meta["kind"] == "hnsw":
        knobs = {"M": params["hnsw_m"], "efConstruction": params["ef_construction"]}
        return {"index_type": "HNSW", "params": knobs}
    knobs = {"nlist": params["nlist"], "m": params["pq_m"], "nbits": params["nbits"]}
    return {"index_type": "IVF_PQ", "params": knobs}
