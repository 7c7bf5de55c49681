"""Shared pydantic base for every recipe section."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A frozen recipe section that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
