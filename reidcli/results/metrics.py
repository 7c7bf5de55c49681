"""Evaluation and training results."""

from __future__ import annotations

from dataclasses import dataclass, field

from reidcli.results.base import METRIC_KEYS, Record, plain
from reidcli.results.calibration import OpenSetResult


@dataclass(frozen=True)
class Metrics(Record):
    """Market-1501 (or CUHK03) metrics of one ranking."""

    rank1: float
    rank5: float
    rank10: float
    rank20: float
    mAP: float
    mINP: float
    num_query: int
    num_skipped: int
    distance: str | None = None
    protocol: str | None = None
    per_camera: dict[str, Metrics] = field(default_factory=dict)
    rerank_params: dict[str, float] = field(default_factory=dict)  # k1, k2, lambda
    detail: dict = field(default_factory=dict, repr=False)  # everything computed (cmc, ...)

    @classmethod
    def from_dict(cls, metrics: dict, parent: dict | None = None) -> Metrics:
        known = {k: metrics.get(k, 0) for k in METRIC_KEYS}
        cameras = {
            str(cam): cls.from_dict(m) for cam, m in (metrics.get("per_camera") or {}).items()
        }
        context = parent or metrics
        return cls(
            **known, distance=context.get("distance"), protocol=context.get("protocol"),
            per_camera=cameras, rerank_params=dict(metrics.get("params") or {}), detail=metrics,
        )  # fmt: skip

    def to_json(self) -> dict:
        return {k: plain(getattr(self, k)) for k in METRIC_KEYS}


@dataclass(frozen=True)
class EvalResult(Record):
    """`reid eval` / `reid rerank`: the metrics, re-ranked ones when re-ranking ran, and where
    results were written."""

    metrics: Metrics
    reranked: Metrics | None = None
    reranked_out: str | None = None
    checkpoint: str | None = None
    split: str | None = None
    data_root: str | None = None
    eval_json: str | None = None
    features_file: str | None = None
    figures: tuple[str, ...] = ()
    index: dict | None = None
    exact: Metrics | None = None
    runner: str | None = None  # what embedded the model: pytorch or onnxruntime
    # the open-set protocol: withheld identities, DIR and unknown rejection per threshold
    open_set: OpenSetResult | None = None

    @classmethod
    def from_metrics(cls, metrics: dict, **extra) -> EvalResult:
        reranked = metrics.get("reranked")
        return cls(
            Metrics.from_dict(metrics),
            Metrics.from_dict(reranked, metrics) if reranked is not None else None,
            **extra,
        )

    @property
    def detail(self) -> dict:
        """Everything the evaluation computed (cmc curve, per-camera figures, parameters)."""
        return self.metrics.detail

    def to_json(self) -> dict:
        doc = self.metrics.to_json()
        if self.reranked is not None:
            doc["reranked"] = self.reranked.to_json()
            if self.reranked_out is not None:
                doc["reranked"]["out"] = self.reranked_out
        extras = {"figures": list(self.figures) or None, "checkpoint": self.checkpoint,
                  "split": self.split, "data_root": self.data_root, "eval_json": self.eval_json,
                  "features_file": self.features_file, "index": self.index,
                  "exact": self.exact.to_json() if self.exact is not None else None,
                  "runner": self.runner, "open_set": self.open_set}  # fmt: skip
        doc |= {k: plain(v) for k, v in extras.items() if v is not None}
        return doc


@dataclass(frozen=True)
class TrainResult(Record):
    """What a `train` call did: the run folder, how it ended, the best validation metrics."""

    run_dir: str
    status: str  # completed | interrupted
    epochs_done: int
    steps: int
    best: dict = field(default_factory=dict)  # best validation metrics with their epoch
    last_val: dict = field(default_factory=dict)
    signal: str | None = None

    @property
    def best_epoch(self) -> int | None:
        """The epoch of the best validation mAP (None without validation)."""
        return self.best.get("epoch")

    @property
    def best_metrics(self) -> Metrics | None:
        """The best validation metrics (None without validation)."""
        return Metrics.from_dict(self.best) if self.best else None

    def to_json(self) -> dict:
        return {"run_dir": self.run_dir, "status": self.status, "epochs": self.epochs_done,
                "steps": self.steps, "best": self.best, "last_val": self.last_val}  # fmt: skip


@dataclass(frozen=True)
class AdaptResult(TrainResult):
    """What an `adapt` call did: a training run's outcome and the last clustering."""

    clusters: dict = field(default_factory=dict)  # clusters, outliers, eps, sizes

    def to_json(self) -> dict:
        return {**super().to_json(), "clusters": self.clusters}
