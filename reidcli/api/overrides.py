"""Recipe overrides as the API takes them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from reidcli.errors import RecipeError

# Recipe overrides: `KEY=VALUE` strings as `--set` takes them, or a {dotted key: value} mapping.
Overrides = Sequence[str] | Mapping[str, Any]


def as_overrides(overrides: Overrides) -> list[str]:
    """`KEY=VALUE` strings from strings or a {dotted key: value} mapping (values as JSON)."""
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value, default=str)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        raise RecipeError(f"overrides must be a list of KEY=VALUE strings, got {overrides!r}")
    return list(overrides)
