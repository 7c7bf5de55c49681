"""Shared pydantic base for every recipe section and options model."""

from pydantic import BaseModel, ConfigDict, field_validator

INT64 = (-(2**63), 2**63 - 1)
# numpy's legacy and torch's seeding both take 32-bit seeds.
MAX_SEED = 2**32 - 1


class Section(BaseModel):
    """A frozen recipe section that refuses unknown keys, non-finite floats (NaN, inf) and
    integers outside the 64-bit range, wherever they appear (also inside tuples)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    @field_validator("*", mode="after")
    @classmethod
    def _int64(cls, value):
        _check_int64(value)
        return value


def _check_int64(value) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"{value} is outside the 64-bit integer range")
    if isinstance(value, tuple | list):
        for item in value:
            _check_int64(item)
