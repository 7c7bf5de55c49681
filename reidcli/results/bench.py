"""Results of `reid bench` and its gate."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from reidcli.results.base import Record, plain


@dataclass(frozen=True)
class Latency(Record):
    p50: float
    p90: float
    p99: float


@dataclass(frozen=True)
class BenchRow(Record):
    """One timed setting of a bench report (images/s None: it did not run, `error` says why)."""

    mode: str
    batch: int
    precision: str
    channels_last: bool
    cudnn_benchmark: bool | None
    backend: str
    compile: bool
    images_per_s: float | None
    latency_ms: Latency | None
    peak_memory_mb: float | None
    speedup: float | None
    iterations: int
    error: str | None
    reference_images_per_s: float | None = None  # with bench.reference: the reference workload
    relative_speed: float | None = None  # images/s against the reference's, in the same run

    @classmethod
    def from_dict(cls, row: dict) -> BenchRow:
        fields: dict[str, Any] = {f.name: row.get(f.name) for f in dataclasses.fields(cls)}
        latency = row.get("latency_ms")
        fields["latency_ms"] = Latency(**latency) if latency else None
        return cls(**fields)


@dataclass(frozen=True)
class BenchReport(Record):
    """`reid bench`: the model's size and each setting's speed (`document` is the report file's
    JSON, which `--out` writes and `--compare` reads)."""

    model: str
    input: tuple[int, int]
    params: int
    params_without_classifier: int
    gmacs: float
    gflops: float
    forward_gmacs: float
    flip: bool
    embedding_dim: int
    device: str
    device_name: str
    cpu_capability: str | None
    threads: int | None
    torch: str
    rows: tuple[BenchRow, ...]
    document: dict = field(repr=False)

    @classmethod
    def from_document(cls, doc: dict) -> BenchReport:
        env = doc["env"]
        return cls(
            doc["model"], tuple(doc["input"]), doc["params"], doc["params_without_classifier"],
            doc["gmacs"], doc["gflops"], doc["forward_gmacs"], doc["flip"], doc["embedding_dim"],
            env.get("device", "?"), env.get("device_name", "?"), env.get("cpu_capability"),
            env.get("threads"), env.get("torch", "?"),
            tuple(BenchRow.from_dict(r) for r in doc["results"]), doc,
        )  # fmt: skip

    def to_json(self) -> dict:
        return plain(self.document)


@dataclass(frozen=True)
class RowComparison(Record):
    row: str
    baseline: float | None
    current: float | None
    change_pct: float | None
    regression: bool
    note: str


@dataclass(frozen=True)
class BenchComparison(Record):
    """The regression gate: a report against a baseline."""

    passed: bool
    tolerance: float
    size_mismatches: tuple[dict, ...]
    timing_compared: bool
    timing_not_compared_because: tuple[str, ...]
    rows: tuple[RowComparison, ...]
    regressions: tuple[str, ...]
    not_in_baseline: tuple[str, ...]
    not_run: tuple[str, ...]
    document: dict = field(repr=False)
    compared_by: str = "images_per_s"  # or relative_speed (against the reference workload)
    rows_not_compared: tuple[str, ...] = ()  # each with the reason

    @classmethod
    def from_document(cls, doc: dict) -> BenchComparison:
        return cls(
            doc["passed"], doc["tolerance"], tuple(doc["size_mismatches"]),
            doc["timing_compared"], tuple(doc["timing_not_compared_because"]),
            tuple(RowComparison(**r) for r in doc["rows"]), tuple(doc["regressions"]),
            tuple(doc["not_in_baseline"]), tuple(doc["not_run"]), doc,
            doc.get("compared_by", "images_per_s"), tuple(doc.get("rows_not_compared", ())),
        )  # fmt: skip

    def to_json(self) -> dict:
        return plain(self.document)
