"""Searchable galleries: what every backend shares (rows, metrics, exact re-scoring, recall).

A gallery stores embeddings with each row's image path, person id and camera, under stable
int64 row ids that are never reused. Distances follow `reid eval`: `cosine` is 1 − cos on
L2-normalised rows, `euclidean` the squared L2 distance. Where a backend keeps the rows'
float32 vectors (flat, HNSW, IVF-PQ with refinement), candidates are re-scored in float64 and
ranked by (distance, row id), so a flat gallery's answer is the brute-force ranking exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reidcli.errors import GalleryIndexError
from reidcli.metrics.distance import normalize

KINDS = ("flat", "hnsw", "ivfpq")
METRICS = ("cosine", "euclidean")
# `kind="auto"`: exact search below this many rows, IVF-PQ from here on.
AUTO_FLAT_MAX = 200_000
RECALL_K = 10
# An HNSW graph that cannot return K rows ranks every row instead, up to this many rows.
RANK_ALL_MAX = 50_000
QUERY_BLOCK = 256
UNKNOWN = -1  # pid / camid of a row whose identity or camera was not given

# keep(query rows, candidate row ids) -> bool mask of the candidates to return
Keep = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Rows:
    """Embeddings with their image paths, person ids and cameras (UNKNOWN when not given).

    Attributes:
        features: (N, D) float32 embeddings, as the model wrote them.
        paths: (N,) image paths (object array of str).
        pids: (N,) int64 person ids.
        camids: (N,) int64 cameras.
    """

    features: np.ndarray
    paths: np.ndarray
    pids: np.ndarray
    camids: np.ndarray

    def __len__(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class Hits:
    """Search results, one row per query, nearest first; missing slots hold id -1 and NaN.

    Attributes:
        ids: (Q, K) int64 row ids.
        distances: (Q, K) float64 distances (approximate where the gallery keeps no vectors).
    """

    ids: np.ndarray
    distances: np.ndarray


@dataclass(frozen=True)
class SearchParams:
    """Per-search knobs of the approximate indexes (None: the gallery's stored defaults)."""

    nprobe: int | None = None
    ef_search: int | None = None


def prepare_vectors(features: np.ndarray, metric: str) -> np.ndarray:
    """Float32 rows as the index stores them: unit length for cosine, unchanged for euclidean."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    return normalize(x) if metric == "cosine" else x


def to_distance(values: np.ndarray, metric: str) -> np.ndarray:
    """An index's inner products (cosine) or squared L2 (euclidean) as `reid eval` distances."""
    return 1.0 - values if metric == "cosine" else np.maximum(values, 0.0)


def exact_distances(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """(Q, K) float64 distances of prepared queries (Q, D) to candidate vectors (Q, K, D)."""
    q = queries.astype(np.float64)[:, None, :]
    v = vectors.astype(np.float64)
    if metric == "cosine":
        return 1.0 - np.einsum("qkd,qkd->qk", v, np.broadcast_to(q, v.shape))
    diff = v - q
    return np.einsum("qkd,qkd->qk", diff, diff)


def sort_hits(ids: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row ordered by (distance, id), missing slots (id -1) last."""
    missing = ids < 0
    dist = np.where(missing, np.inf, dist)
    order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, ids), dist), axis=1)
    ids, dist = np.take_along_axis(ids, order, 1), np.take_along_axis(dist, order, 1)
    return ids, np.where(ids < 0, np.nan, dist)


class Gallery(ABC):
    """A stored gallery. Subclasses implement the `_`-methods for one backend."""

    meta: dict
    max_fetch: int | None = None  # the most candidates one search may ask the backend for

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def metric(self) -> str:
        return self.meta["metric"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    @abstractmethod
    def count(self) -> int:
        """Rows in the gallery."""

    @property
    def exact(self) -> bool:
        """Whether search returns the brute-force ranking (flat)."""
        return self.kind == "flat"

    # -- backend -------------------------------------------------------------------------------
    @abstractmethod
    def _candidates(
        self, queries: np.ndarray, k: int, params: SearchParams
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) row ids (-1 where fewer) and the index's own distances, nearest first."""

    @abstractmethod
    def _vectors(self, ids: np.ndarray) -> np.ndarray | None:
        """Stored float32 vectors of row ids (any shape of ids, + (D,)), None when not kept."""

    @abstractmethod
    def _add(self, vectors: np.ndarray, ids: np.ndarray, rows: Rows) -> None:
        """Insert prepared vectors and their rows' labels under new row ids."""

    @abstractmethod
    def _remove(self, ids: np.ndarray) -> None:
        """Delete existing rows and their labels."""

    @abstractmethod
    def labels(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Paths, pids and camids of row ids (any shape; id -1 gives "", UNKNOWN, UNKNOWN)."""

    @abstractmethod
    def label_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(pids, camids) of every row, in no particular order."""

    @abstractmethod
    def ids_of(self, *, pid: int | None = None, paths=None) -> np.ndarray:
        """Row ids of a person, or of image paths (paths not in the gallery are ignored)."""

    @abstractmethod
    def _reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """(n, D) vectors of rows, exact or as decoded from the index's codes."""

    @abstractmethod
    def save(self) -> None:
        """Persist the gallery (atomically: a failure leaves the previous state)."""

    # -- shared ----------------------------------------------------------------------------------
    def refine_factor(self) -> int:
        """R: the top K's first 10 hits are chosen among R times as many candidates."""
        return max(1, self.meta["params"].get("refine", 0)) if self.kind == "ivfpq" else 1

    def check_features(self, features: np.ndarray, source: str, distance: str | None) -> None:
        """Raise GalleryIndexError for features of another width or stated metric."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise GalleryIndexError(
                f"{source}: {features.shape[-1]}-d features, but the index holds {self.dim}-d "
                "embeddings (another model?)"
            )
        if distance is not None and distance != self.metric:
            raise GalleryIndexError(
                f"{source}: features for the {distance} distance, but the index uses {self.metric}"
            )

    def search(
        self,
        features: np.ndarray,
        k: int,
        params: SearchParams = SearchParams(),
        keep: Keep | None = None,
        prepared: bool = False,
    ) -> Hits:
        """The k nearest rows of each query, after dropping the candidates `keep` rejects.

        Candidates are fetched until each query has k kept hits (or the gallery is exhausted);
        a flat gallery also fetches until float32 rounding in the index cannot have hidden a
        nearer row, so its answer is exact.
        """
        if k < 1:
            raise GalleryIndexError(f"top-k must be >= 1, got {k}")
        k = min(k, max(1, self.count))  # no more hits than rows: bounds what is allocated
        q = features if prepared else prepare_vectors(features, self.metric)
        out_ids = np.full((len(q), k), -1, dtype=np.int64)
        out_dist = np.full((len(q), k), np.nan)
        total = self.count
        if total == 0:
            return Hits(out_ids, out_dist)
        if self.max_fetch is not None:
            total = min(total, self.max_fetch)
        for start in range(0, len(q), QUERY_BLOCK):
            rows = np.arange(start, min(len(q), start + QUERY_BLOCK))
            self._search_block(q, rows, k, params, keep, total, out_ids, out_dist)
        return Hits(out_ids, out_dist)

    def _search_block(self, q, rows, k, params, keep, total, out_ids, out_dist) -> None:
        want = k
        todo = rows
        while todo.size:
            # refinement re-scores (R - 1) extra candidates per hit of the head (first 10)
            extra = (self.refine_factor() - 1) * min(want, RECALL_K) + (8 if self.exact else 0)
            fetch = min(total, want + extra)
            ids, approx = self._candidates(q[todo], max(1, fetch), params)
            valid = ids >= 0
            # missing slots (-1) borrow a real row's vector; they sort last all the same
            vectors = self._vectors(np.where(valid, ids, ids[valid][0])) if valid.any() else None
            if vectors is not None:
                dist = exact_distances(q[todo], vectors, self.metric)
            else:
                dist = approx.astype(np.float64)
            ids, dist = sort_hits(ids, dist)
            kept = np.ones(ids.shape, dtype=bool) if keep is None else keep(todo, ids)
            kept &= ids >= 0
            enough = kept.sum(1) >= k
            # an approximate index can answer short of `fetch` (lists or graph exhausted):
            # search wider; the exact one is short only when the gallery is
            short = (ids < 0).any(1)
            wider = None if self.exact else self.wider(params)
            done = enough | (short & (wider is None)) | (~short & (fetch >= total))
            if self.exact and vectors is not None:
                done &= short | (fetch >= total) | self._complete(approx, dist, kept, k)
            stuck = short & (wider is None) & ~enough
            if stuck.any() and self._rank_all(q, todo[stuck], k, keep, out_ids, out_dist):
                todo, ids, dist, kept = todo[~stuck], ids[~stuck], dist[~stuck], kept[~stuck]
                done, short = done[~stuck], short[~stuck]
            for j in np.flatnonzero(done):
                sel = np.flatnonzero(kept[j])[:k]
                out_ids[todo[j], : sel.size] = ids[j, sel]
                out_dist[todo[j], : sel.size] = dist[j, sel]
            if (short & ~done).any():
                params = wider
            todo = todo[~done]
            want *= 2

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, vectors) of every row, where the backend keeps them; None otherwise."""
        return None

    def _rank_all(self, q, rows, k, keep, out_ids, out_dist) -> bool:
        """Rank every row for `rows` (queries an approximate index left short); False when the
        gallery is too large for that or keeps no vectors."""
        if self.count > RANK_ALL_MAX or (everything := self._all_vectors()) is None:
            return False
        ids, vectors = everything
        table = vectors.astype(np.float64)
        for row in rows:
            query = q[row].astype(np.float64)
            if self.metric == "cosine":
                dist = 1.0 - table @ query
            else:
                diff = table - query
                dist = np.einsum("nd,nd->n", diff, diff)
            order = np.lexsort((ids, dist))
            ranked, ranked_dist = ids[order][None], dist[order][None]
            kept = np.ones(ranked.shape, bool) if keep is None else keep(np.array([row]), ranked)
            sel = np.flatnonzero(kept[0])[:k]
            out_ids[row, : sel.size] = ranked[0, sel]
            out_dist[row, : sel.size] = ranked_dist[0, sel]
        return True

    def wider(self, params: SearchParams) -> SearchParams | None:
        """Search parameters twice as broad, or None when the search is already exhaustive."""
        search = self.meta.get("search", {})
        if self.kind == "ivfpq":
            nlist = self.meta["params"]["nlist"]
            current = params.nprobe or search["nprobe"]
            return None if current >= nlist else SearchParams(nprobe=min(nlist, 2 * current))
        if self.kind == "hnsw":
            current = params.ef_search or search["ef_search"]
            return None if current >= self.count else SearchParams(ef_search=2 * current)
        return None

    def _complete(self, approx, exact, kept, k) -> np.ndarray:
        """Whether no row beyond the fetched candidates can be nearer than the k-th kept hit.

        The index's float32 distances err by far less than `slack`; a row not fetched is at
        least as far (by the index) as the last candidate.
        """
        slack = 1e-4 * max(1.0, float(self.meta.get("max_sq_norm", 1.0)))
        last_fetched = np.nanmax(np.where(np.isfinite(approx), approx, -np.inf), axis=1)
        kth = np.full(len(exact), np.inf)
        for j in range(len(exact)):
            sel = np.flatnonzero(kept[j])
            if sel.size >= k:
                kth[j] = exact[j, sel[k - 1]]
        return last_fetched - slack > kth

    def add(self, rows: Rows, vectors: np.ndarray | None = None) -> np.ndarray:
        """Append rows under new ids (never used before); returns the ids. The caller saves.

        `vectors`: the rows already prepared (`prepare_vectors`), to skip doing it again.
        """
        if vectors is None:
            vectors = prepare_vectors(rows.features, self.metric)
        first = int(self.meta["next_id"])
        ids = np.arange(first, first + len(rows), dtype=np.int64)
        self._add(vectors, ids, rows)
        self.meta["next_id"] = first + len(rows)
        self.meta["count"] = self.count
        norms = float(np.einsum("ij,ij->i", vectors, vectors).max()) if len(vectors) else 0.0
        self.meta["max_sq_norm"] = max(float(self.meta.get("max_sq_norm", 0.0)), norms)
        return ids

    def remove(self, ids: np.ndarray) -> dict:
        """Delete rows, then check with a search that none of them can be found.

        Raises:
            GalleryIndexError: a removed row is still found (nothing is saved then).
        """
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        if ids.size == 0:
            return {"removed": 0, "verified": True}
        probes = self._reconstruct(ids)
        self._remove(ids)
        self.meta["count"] = self.count
        if self.count:
            hits = self.search(
                probes, min(self.count, RECALL_K), self.exhaustive_params(), prepared=True
            )
            still = np.intersect1d(hits.ids, ids)
            if still.size:
                raise GalleryIndexError(
                    f"removal failed: rows {still[:10].tolist()} are still found by a search"
                )
        return {"removed": int(ids.size), "verified": True}

    def exhaustive_params(self) -> SearchParams:
        """Search parameters that visit the whole index (for verification)."""
        if self.kind == "ivfpq":
            return SearchParams(nprobe=self.meta["params"]["nlist"])
        if self.kind == "hnsw":
            return SearchParams(ef_search=max(256, 4 * self.meta["search"]["ef_search"]))
        return SearchParams()

    def measure_recall(self, vectors: np.ndarray, ids: np.ndarray, sample: int, seed: int) -> dict:
        """Recall@10 of the index against brute force, with stored rows as queries.

        `vectors` are the prepared rows under `ids` (all of them: the exact neighbours are
        searched among every row). Each query's own row is left out of both lists.
        """
        count = len(vectors)
        k = min(RECALL_K, count - 1)
        if k < 1:
            return {"recall_at_10": None, "sample": 0}
        picked = np.sort(np.random.default_rng(seed).choice(count, min(sample, count), False))
        queries, self_ids = vectors[picked], ids[picked]
        truth = brute_force(queries, vectors, self.metric, k + 1)  # positions into vectors
        truth_ids = ids[truth]
        found = self.search(
            queries, k, keep=lambda rows, cand: cand != self_ids[rows][:, None], prepared=True
        ).ids
        hits = [
            np.intersect1d(t[t != s][:k], f).size
            for t, f, s in zip(truth_ids, found, self_ids, strict=True)
        ]
        return {"recall_at_10": round(float(np.mean(hits)) / k, 4), "sample": len(picked)}


def brute_force(queries: np.ndarray, vectors: np.ndarray, metric: str, k: int) -> np.ndarray:
    """(Q, k) positions of the k nearest `vectors` of each prepared query, in float32 BLAS."""
    from reidcli.metrics.distance import pair_distance, squared_norms

    k = min(k, len(vectors))
    best_d = np.full((len(queries), 0), np.inf, dtype=np.float32)
    best_i = np.empty((len(queries), 0), dtype=np.int64)
    step = max(1, (1 << 24) // max(1, len(queries)))
    for start in range(0, len(vectors), step):
        block = vectors[start : start + step]
        sq = squared_norms(block) if metric == "euclidean" else None
        d = np.concatenate([best_d, pair_distance(queries, block, metric, sq)], 1)
        cols = np.arange(start, start + len(block))
        i = np.concatenate([best_i, np.broadcast_to(cols, (len(queries), len(block)))], 1)
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if d.shape[1] > k else np.argsort(d, 1)
        best_d, best_i = np.take_along_axis(d, part, 1), np.take_along_axis(i, part, 1)
    order = np.lexsort((best_i, best_d), axis=1)
    return np.take_along_axis(best_i, order, 1)
