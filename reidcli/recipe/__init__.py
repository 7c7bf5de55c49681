"""Recipe schema and loading (pydantic, no torch).

The names below are loaded on first use, so that a command needing one section (`reid rerank`
and `reid eval --features` read `reidcli.recipe.run.Eval` only) does not build the whole schema.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reidcli.recipe.loading import (
        apply_override,
        load_eval,
        load_recipe,
        override_recipe,
        validate_recipe,
    )
    from reidcli.recipe.schema import Recipe

_NAMES = {
    "Recipe": "reidcli.recipe.schema",
    "apply_override": "reidcli.recipe.loading",
    "load_eval": "reidcli.recipe.loading",
    "load_recipe": "reidcli.recipe.loading",
    "override_recipe": "reidcli.recipe.loading",
    "validate_recipe": "reidcli.recipe.loading",
}

__all__ = [
    "Recipe",
    "apply_override",
    "load_eval",
    "load_recipe",
    "override_recipe",
    "validate_recipe",
]


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])
