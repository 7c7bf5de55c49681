"""The base of the result records: `to_json()` as plain JSON data."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

# The keys of the documented metrics (also under "reranked"); the one list of them.
METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "num_query", "num_skipped")


def plain(value: Any) -> Any:
    """JSON-ready: records as their `to_json()`, paths as strings, numpy scalars as numbers."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class Record:
    """Base of the results: `to_json()` is every field, as plain JSON data."""

    def to_json(self) -> dict:
        record: Any = self  # every result is a frozen dataclass
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(record)}
