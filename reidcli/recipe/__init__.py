"""Recipe schema and loading (pydantic, no torch)."""

from reidcli.recipe.loading import apply_override, load_recipe, override_recipe, validate_recipe
from reidcli.recipe.schema import Recipe

__all__ = ["Recipe", "apply_override", "load_recipe", "override_recipe", "validate_recipe"]
