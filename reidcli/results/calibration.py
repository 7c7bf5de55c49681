"""Results of `reid calibrate` and the calibration document kept with a model, an export or an
index (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from reidcli.errors import CalibrationError
from reidcli.results.base import Record, plain

FORMAT = "reid-calibration"
VERSION = 1


@dataclass(frozen=True)
class Threshold(Record):
    """The distance threshold of one false-match rate: a pair is the same person when its
    distance is below `threshold`. Intervals are bootstrap intervals over identities."""

    far: float
    threshold: float
    tar: float
    false_matches: int
    threshold_ci: tuple[float, float]
    far_ci: tuple[float, float]
    tar_ci: tuple[float, float]


@dataclass(frozen=True)
class PairCounts(Record):
    """The pairs a calibration (or its check) measured."""

    positive: int  # one identity, two cameras
    negative: int  # two identities
    identities: int
    cameras: int
    kind: str  # "query x gallery" or "all pairs of rows"

    @classmethod
    def from_document(cls, doc: dict) -> PairCounts:
        return cls(int(doc["positive"]), int(doc["negative"]), int(doc["identities"]),
                   int(doc["cameras"]), str(doc["kind"]))  # fmt: skip


@dataclass(frozen=True)
class Calibration(Record):
    """Thresholds at stated false-match rates for one model's distances.

    Attributes:
        metric: the distance the thresholds apply to (cosine: 1 - cos; euclidean: squared).
        dim: the embedding width of the model.
        model_sha256: SHA-256 of the checkpoint that produced the features (None: unknown).
        thresholds: one per requested FAR, in the order asked.
        pairs: the pairs measured.
        min_far: the smallest FAR those pairs can measure.
        source: what the features came from.
        document: the whole JSON document (bootstrap settings, the ROC curve, ...).
    """

    metric: str
    dim: int
    model_sha256: str | None
    thresholds: tuple[Threshold, ...]
    pairs: PairCounts
    min_far: float
    source: str
    document: dict = field(repr=False)

    @classmethod
    def from_document(cls, doc: dict, source: str = "calibration") -> Calibration:
        """Read a calibration document.

        Raises:
            CalibrationError: not a reid calibration, or a newer version of one.
        """
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CalibrationError(f"{source}: not a reid calibration (written by reid calibrate)")
        if doc.get("version") != VERSION:
            raise CalibrationError(
                f"{source}: calibration version {doc.get('version')}; this reid reads {VERSION}"
            )
        try:
            levels = tuple(
                Threshold(
                    float(t["far"]),
                    float(t["threshold"]),
                    float(t["tar"]),
                    int(t["false_matches"]),
                    tuple(t["threshold_ci"]),
                    tuple(t["far_ci"]),
                    tuple(t["tar_ci"]),
                )
                for t in doc["thresholds"]
            )
            return cls(
                str(doc["metric"]), int(doc["dim"]), doc.get("model_sha256"), levels,
                PairCounts.from_document(doc["pairs"]), float(doc["min_far"]),
                str(doc.get("source", "")), doc,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(f"{source}: malformed calibration ({err!r})") from None

    def at_far(self, far: float) -> Threshold:
        """The threshold calibrated for `far`.

        Raises:
            CalibrationError: `far` was not calibrated (the calibrated ones are named).
        """
        for level in self.thresholds:
            if abs(level.far - far) <= 1e-9 * max(far, 1e-30) + 1e-15:
                return level
        known = ", ".join(f"{t.far:g}" for t in self.thresholds)
        raise CalibrationError(f"FAR {far:g} was not calibrated; calibrated: {known}")

    def check_model(self, dim: int, metric: str, model_sha256: str | None, what: str) -> None:
        """Refuse distances of another model: another width, distance or checkpoint.

        Raises:
            CalibrationError: naming what differs.
        """
        if dim != self.dim:
            raise CalibrationError(
                f"the calibration is for {self.dim}-d embeddings; {what} has {dim}-d ones "
                "(another model)"
            )
        if metric != self.metric:
            raise CalibrationError(
                f"the calibration is for the {self.metric} distance; {what} uses {metric}"
            )
        if model_sha256 and self.model_sha256 and model_sha256 != self.model_sha256:
            raise CalibrationError(
                f"the calibration was made with checkpoint {self.model_sha256[:12]}; {what} comes "
                f"from checkpoint {model_sha256[:12]} (another model): calibrate it again"
            )

    def kept(self) -> dict:
        """The document as an export or an index keeps it: everything but the ROC curve."""
        return {k: v for k, v in self.document.items() if k != "curve"}

    def to_json(self) -> dict:
        return plain(self.document)


@dataclass(frozen=True)
class CalibrateResult(Record):
    """`reid calibrate`: the calibration and the files written."""

    calibration: Calibration
    out: str | None = None
    figure: str | None = None

    def to_json(self) -> dict:
        return plain(self.calibration.kept()) | {
            k: v for k, v in (("out", self.out), ("figure", self.figure)) if v
        }


@dataclass(frozen=True)
class MeasuredThreshold(Record):
    """A calibrated threshold measured on other labeled features."""

    far: float  # the FAR it was calibrated for
    threshold: float
    measured_far: float
    measured_tar: float
    far_ci: tuple[float, float]
    tar_ci: tuple[float, float]


@dataclass(frozen=True)
class CalibrationCheck(Record):
    """`reid calibrate --verify`: what a calibration's thresholds do on other features."""

    calibration: str
    source: str
    pairs: PairCounts
    thresholds: tuple[MeasuredThreshold, ...]


@dataclass(frozen=True)
class MatchThreshold(Record):
    """The threshold a search applied: same person when distance < `distance`."""

    distance: float
    far: float | None  # the FAR it was calibrated for (None: a distance given)
    tar: float | None
    source: str  # "given", the calibration file, or "the index's calibration"


@dataclass(frozen=True)
class OpenSetLevel(Record):
    """The open-set figures at one threshold."""

    far: float
    threshold: float
    dir: float  # known queries whose nearest crop is their person, under the threshold
    unknown_rejected: float  # unknown queries whose nearest crop is at the threshold or beyond
    false_accept: float  # 1 - unknown_rejected


@dataclass(frozen=True)
class OpenSetResult(Record):
    """`reid eval --open-set`: query identities withheld from the gallery, and the figures at
    each threshold (from a calibration, or set on the unknown queries)."""

    unknown_ids: int
    seed: int
    identities_withheld: tuple[int, ...]
    known_queries: int
    unknown_queries: int
    gallery_rows: int
    rank1_known: float
    threshold_source: str  # "calibration" or "unknown queries"
    calibration: str | None
    fars_not_measurable: tuple[float, ...]
    thresholds: tuple[OpenSetLevel, ...]

    @classmethod
    def from_document(cls, doc: dict) -> OpenSetResult:
        levels = tuple(OpenSetLevel(**level) for level in doc["thresholds"])
        return cls(
            doc["unknown_ids"], doc["seed"], tuple(doc["identities_withheld"]),
            doc["known_queries"], doc["unknown_queries"], doc["gallery_rows"],
            doc["rank1_known"], doc["threshold_source"], doc.get("calibration"),
            tuple(doc["fars_not_measurable"]), levels,
        )  # fmt: skip
