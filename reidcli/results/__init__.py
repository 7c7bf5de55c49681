"""What the verbs return: small frozen records with `to_json()` (torch-free).

`reid COMMAND --json` prints `to_json()` of the verb's result; the CLI renders tables from the
attributes and never looks a value up by string. A record built from a document (a bench
report, an index's metadata, `dataset.json`) keeps the document whole in `document`, so that
nothing a Python user had before is lost, and exposes the values the CLI reads as attributes.
"""

from reidcli.results.base import METRIC_KEYS, Record
from reidcli.results.bench import BenchComparison, BenchReport, BenchRow, Latency, RowComparison
from reidcli.results.calibration import (
    CalibrateResult,
    Calibration,
    CalibrationCheck,
    MatchThreshold,
    MeasuredThreshold,
    OpenSetLevel,
    OpenSetResult,
    PairCounts,
    Threshold,
)
from reidcli.results.deployment import (
    EmbedResult,
    ExportedFile,
    ExportResult,
    ParityBatch,
    ParityReport,
    PreparedDataset,
    SkippedImage,
    SplitStats,
)
from reidcli.results.gallery import (
    Hit,
    IndexAddResult,
    IndexCompactResult,
    IndexInfo,
    IndexRebuildResult,
    IndexRemoveResult,
    IndexUpgradeResult,
    QueryHits,
    SearchResult,
)
from reidcli.results.metrics import AdaptResult, EvalResult, Metrics, TrainResult

__all__ = [
    "METRIC_KEYS",
    "AdaptResult",
    "BenchComparison",
    "BenchReport",
    "BenchRow",
    "CalibrateResult",
    "Calibration",
    "CalibrationCheck",
    "EmbedResult",
    "EvalResult",
    "ExportResult",
    "ExportedFile",
    "Hit",
    "IndexAddResult",
    "IndexCompactResult",
    "IndexInfo",
    "IndexRebuildResult",
    "IndexRemoveResult",
    "IndexUpgradeResult",
    "Latency",
    "MatchThreshold",
    "MeasuredThreshold",
    "Metrics",
    "OpenSetLevel",
    "OpenSetResult",
    "PairCounts",
    "ParityBatch",
    "ParityReport",
    "PreparedDataset",
    "QueryHits",
    "Record",
    "RowComparison",
    "SearchResult",
    "SkippedImage",
    "SplitStats",
    "Threshold",
    "TrainResult",
]
