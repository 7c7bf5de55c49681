"""The options model of `reid calibrate` and the false-match rates it takes (torch-free)."""

from __future__ import annotations

from pydantic import Field, field_validator

from reidcli.devices import Device
from reidcli.recipe.base import MAX_SEED
from reidcli.recipe.options_base import RUNNER_HELP, Metric, ModelRunner, Options, Split

# False-match rates calibrated when none are asked for.
DEFAULT_FARS = (0.01, 0.001, 0.0001)


def check_fars(value: tuple[float, ...]) -> tuple[float, ...]:
    """False-match rates in (0, 0.1], each once, in the order given."""
    if not value:
        raise ValueError("give at least one false-match rate")
    bad = [f for f in value if not 0 < f <= 0.1]
    if bad:
        raise ValueError(f"false-match rates must be in (0, 0.1], got {bad}")
    return tuple(dict.fromkeys(float(f) for f in value))


class CalibrateOptions(Options):
    """`reid calibrate`: the false-match rates, the bootstrap, and where the calibration goes."""

    far: tuple[float, ...] = Field(
        DEFAULT_FARS, description="false-match rates to calibrate (comma-separated, each <= 0.1)"
    )
    out: str | None = Field(
        None, description="calibration file (.json); default RUN/calibration.json for a run, "
        "FEATURES.calibration.json beside a features file",
    )  # fmt: skip
    plot: bool = Field(True, description="draw the ROC curve to a PNG beside the calibration")
    distance: Metric | None = Field(
        None, description="distance of a features file that states none (default cosine); a "
        "run's is its recipe's eval.distance",
    )  # fmt: skip
    split: Split = Field("val", description="the split of a run that is embedded")
    bootstrap: int = Field(
        200, ge=20, le=10_000, description="bootstrap replicates (identities drawn with "
        "replacement) of the confidence intervals",
    )  # fmt: skip
    confidence: float = Field(0.95, ge=0.5, le=0.999, description="confidence of the intervals")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the bootstrap")
    verify: str | None = Field(
        None, description="measure the FAR and TAR this calibration's thresholds give on SOURCE "
        "instead of calibrating",
    )  # fmt: skip
    device: Device = Field("auto", description="where a run's model runs")
    runner: ModelRunner = Field("auto", description=RUNNER_HELP)
    recipe: str | None = Field(
        None, description="recipe of a weights file that carries none (LightMBN .pth)"
    )

    @field_validator("far")
    @classmethod
    def _far(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return check_fars(value)
