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
class Calibration(Record):
    """Thresholds at stated false-match rates for one model's distances.

    Attributes:
        metric: the distance the thresholds apply to (cosine: 1 - cos; euclidean: squared).
        dim: the embedding width of the model.
        model_sha256: SHA-256 of the checkpoint that produced the features (None: unknown).
        thresholds: one per requested FAR, in the order asked.
        pairs: counts of the pairs measured (positive, negative, identities, cameras).
        min_far: the smallest FAR those pairs can measure.
        document: the whole JSON document (source, bootstrap settings, the ROC curve, ...).
    """

    metric: str
    dim: int
    model_sha256: str | None
    thresholds: tuple[Threshold, ...]
    pairs: dict
    min_far: float
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
                dict(doc["pairs"]), float(doc["min_far"]), doc,
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

    def to_json(self) -> dict:
        return plain(self.document)


@dataclass(frozen=True)
class CalibrateResult(Record):
    """`reid calibrate`: the calibration and the files written."""

    calibration: Calibration
    out: str | None = None
    figure: str | None = None

    def to_json(self) -> dict:
        doc = self.calibration.to_json()
        doc = {k: v for k, v in doc.items() if k != "curve"}
        return doc | {k: v for k, v in (("out", self.out), ("figure", self.figure)) if v}


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
    pairs: dict
    thresholds: tuple[MeasuredThreshold, ...]

    def to_json(self) -> dict:
        return {"calibration": self.calibration, "source": self.source, "pairs": self.pairs,
                "thresholds": [t.to_json() for t in self.thresholds]}  # fmt: skip
