"""Results of the gallery verbs: index build, add, remove, info and search."""

from __future__ import annotations

from dataclasses import dataclass, field

from reidcli.results.base import Record, plain
from reidcli.results.calibration import Calibration, MatchThreshold


@dataclass(frozen=True)
class IndexInfo(Record):
    """A gallery's metadata: `reid index build` and `reid index info`."""

    index: str
    kind: str
    metric: str
    dim: int
    count: int
    recall_at_10: float | None
    recall_sample: int | None
    search: dict
    build_seconds: float | None
    document: dict = field(repr=False)

    @property
    def calibration(self) -> Calibration | None:
        """The calibration kept with the index, or None."""
        doc = self.document.get("calibration")
        return Calibration.from_document(doc, f"{self.index}'s calibration") if doc else None

    @classmethod
    def from_document(cls, doc: dict) -> IndexInfo:
        recall = doc.get("recall") or {}
        return cls(
            doc["index"], doc["kind"], doc["metric"], doc["dim"], doc["count"],
            recall.get("recall_at_10"), recall.get("sample"), doc.get("search") or {},
            doc.get("build_seconds"), doc,
        )  # fmt: skip

    def to_json(self) -> dict:
        return plain(self.document)


@dataclass(frozen=True)
class IndexAddResult(Record):
    """`reid index add`: rows added (under ids first_id..last_id), replaced, and what the write
    merged on its own (`compacted`)."""

    index: str
    added: int
    count: int
    before: int
    first_id: int
    last_id: int
    replaced: int = 0
    parts: int = 1
    compacted: list = field(default_factory=list)


@dataclass(frozen=True)
class IndexRemoveResult(Record):
    """`reid index remove`: rows removed, verified by a search; with `purge`, the segment files
    rewritten without them (`purged`)."""

    index: str
    removed: int
    verified: bool
    before: int
    count: int
    purged: list = field(default_factory=list)
    compacted: list = field(default_factory=list)


@dataclass(frozen=True)
class IndexCompactResult(Record):
    """`reid index compact`: segments, deleted rows and bytes on disk before and after."""

    index: str
    segments_before: int
    segments_after: int
    deleted_dropped: int
    bytes_before: int
    bytes_after: int
    seconds: float


@dataclass(frozen=True)
class IndexRebuildResult(Record):
    """`reid index rebuild`: an IVF-PQ quantizer trained on the rows the index holds now;
    recall@10 (against exact, on stored rows) of the index before and of the rebuilt one."""

    index: str
    count: int
    nlist_before: int
    nlist_after: int
    trained_before: int | None
    trained_after: int
    recall_before: float | None
    recall_after: float | None
    written: bool
    seconds: float


@dataclass(frozen=True)
class IndexUpgradeResult(Record):
    """`reid index upgrade`: a single-file index converted into an index folder."""

    index: str
    kind: str
    count: int
    kept: str


@dataclass(frozen=True)
class Hit(Record):
    """One gallery row found for a query; `match` only under a threshold (distance below it)."""

    path: str
    pid: int
    camid: int
    distance: float
    match: bool | None = None

    def to_json(self) -> dict:
        doc = {"path": self.path, "pid": self.pid, "camid": self.camid, "distance": self.distance}
        if self.match is not None:
            doc["match"] = self.match
        return doc


@dataclass(frozen=True)
class QueryHits(Record):
    """One query's hits, nearest first; pid/camid None when the query's are unknown; `found`
    only under a threshold (its nearest hit is a match)."""

    path: str
    pid: int | None
    camid: int | None
    hits: tuple[Hit, ...]
    found: bool | None = None

    def to_json(self) -> dict:
        doc: dict = {"path": self.path}
        if self.pid is not None:
            doc["pid"] = self.pid
        if self.camid is not None:
            doc["camid"] = self.camid
        if self.found is not None:
            doc["found"] = self.found
        doc["hits"] = [hit.to_json() for hit in self.hits]
        return doc


@dataclass(frozen=True)
class SearchResult(Record):
    """`reid search`: the top-K hits of every query."""

    index: str
    kind: str
    metric: str
    topk: int
    seconds: float
    results: tuple[QueryHits, ...]
    out: str | None = None
    threshold: MatchThreshold | None = None  # with a threshold: the one applied

    def to_json(self) -> dict:
        doc = {k: plain(getattr(self, k)) for k in ("index", "kind", "metric", "topk", "seconds")}
        doc["results"] = [entry.to_json() for entry in self.results]
        if self.out is not None:
            doc["out"] = self.out
        if self.threshold is not None:
            doc["threshold"] = self.threshold.to_json()
        return doc
