"""Recipe overrides as the API takes them (defined with the recipe loader)."""

from reidcli.recipe.loading import Overrides, as_overrides

__all__ = ["Overrides", "as_overrides"]
