"""Results of preparing, exporting and embedding."""

from __future__ import annotations

from dataclasses import dataclass, field

from reidcli.results.base import Record, plain


@dataclass(frozen=True)
class SplitStats(Record):
    images: int
    identities: int
    cameras: int


@dataclass(frozen=True)
class PreparedDataset(Record):
    """`reid prepare`: the dataset description written to `dataset.json`."""

    dataset: str
    root: str
    out: str
    splits: dict[str, SplitStats]
    junk_dropped: int
    distractors_kept: int
    corrupt_skipped: int
    non_images_ignored: int
    official_status: str
    official_message: str
    replaced_files: int
    document: dict = field(repr=False)

    @classmethod
    def from_document(cls, doc: dict, out: str) -> PreparedDataset:
        official = doc["official"]
        return cls(
            doc["dataset"], doc["root"], out,
            {name: SplitStats(**stats) for name, stats in doc["splits"].items()},
            doc["junk_dropped"], doc["distractors_kept"], len(doc["corrupt_skipped"]),
            len(doc["non_images_ignored"]), official["status"], official["message"],
            doc.get("replaced_files", 0), doc,
        )  # fmt: skip

    def to_json(self) -> dict:
        return plain(self.document)


@dataclass(frozen=True)
class ParityBatch(Record):
    batch: int
    max_abs: float
    min_cos: float
    worst_index: int
    worst_source: str
    passed: bool


@dataclass(frozen=True)
class ParityReport(Record):
    """An exported file against the PyTorch model, per batch size."""

    atol: float
    min_cos: float
    passed: bool
    batches: tuple[ParityBatch, ...]
    inputs: str
    document: dict = field(repr=False)

    @classmethod
    def from_document(cls, doc: dict) -> ParityReport:
        batches = tuple(
            ParityBatch(
                b["batch"],
                b["max_abs"],
                b["min_cos"],
                b["worst_sample"]["index"],
                b["worst_sample"]["source"],
                b["passed"],
            )
            for b in doc["batches"]
        )
        return cls(doc["atol"], doc["min_cos"], doc["passed"], batches, doc.get("inputs", ""), doc)

    def to_json(self) -> dict:
        return plain(self.document)


@dataclass(frozen=True)
class ExportedFile(Record):
    format: str
    path: str
    metadata_path: str
    exporter: str
    fallback_reason: str | None
    opset: int | None
    batch: int | str
    input_dtype: str
    precision: str
    embedding_dim: int
    parity: ParityReport | None
    seconds: float
    # INT8: mAP / rank-1 of the fp32 and INT8 files and the drop (points), and the calibration set
    retrieval: dict | None = None
    calibration: dict | None = None


@dataclass(frozen=True)
class ExportResult(Record):
    """`reid export`: the files written from one checkpoint."""

    checkpoint: str
    checkpoint_sha256: str
    model: str
    exports: tuple[ExportedFile, ...]


@dataclass(frozen=True)
class SkippedImage(Record):
    path: str
    error: str


@dataclass(frozen=True)
class EmbedResult(Record):
    """`reid embed`: the features file written (a folder of parts under torchrun)."""

    out: str
    model: str
    backend: str
    num_images: int
    embedding_dim: int
    skipped: tuple[SkippedImage, ...]
    batch_size: int
    seconds: float
    images_per_second: float
    num_query: int | None = None
    num_gallery: int | None = None
    parts: int | None = None  # a sharded embed (torchrun): the parts written, one per rank

    def to_json(self) -> dict:
        doc = super().to_json()
        optional = ("num_query", "num_gallery", "parts")
        return {k: v for k, v in doc.items() if v is not None or k not in optional}
