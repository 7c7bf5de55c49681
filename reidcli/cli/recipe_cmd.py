"""`reid recipe validate|show|schema`."""

import json
import sys
from pathlib import Path

import typer

from reidcli.errors import RecipeError

recipe_app = typer.Typer(
    help="Validate recipes, show them resolved, print their JSON Schema.", no_args_is_help=True
)

SET_HELP = "Override a recipe value, e.g. --set optim.lr=3e-4 (value parsed as YAML); repeatable."


def given_flags(keys: dict[str, str], flags: dict) -> list[str]:
    """`KEY=VALUE` recipe overrides for the flags that were given (not None), in `keys` order.

    Args:
        keys: flag name -> the dotted recipe key it sets.
        flags: flag name -> value (None: not given; enums give their value).
    """
    from reidcli.recipe.loading import FlagOverride

    out = []
    for name, key in keys.items():
        value = flags.get(name)
        if value is not None:
            raw = getattr(value, "value", value)
            flag = "--" + name.rstrip("_").replace("_", "-")
            out.append(FlagOverride(f"{key}={json.dumps(raw)}", f"{flag} {raw}"))
    return out


@recipe_app.command("validate")
def validate_cmd(
    files: list[Path] = typer.Argument(..., help="Recipe YAML files."),
) -> None:
    """Validate recipe files; exit 0 when all are valid, 2 otherwise."""
    from reidcli.recipe import load_recipe

    failed = 0
    for path in files:
        try:
            load_recipe(path)
        except RecipeError as err:
            failed += 1
            print(str(err), file=sys.stderr)
        else:
            print(f"{path}: ok", file=sys.stderr)
    if failed:
        raise typer.Exit(2)


@recipe_app.command("show")
def show_cmd(
    file: Path = typer.Argument(..., help="Recipe YAML file."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Print the resolved recipe as YAML, with every default filled in."""
    from reidcli.recipe import load_recipe

    recipe = load_recipe(file, overrides)
    import yaml

    sys.stdout.write(yaml.safe_dump(recipe.to_dict(), sort_keys=False))


@recipe_app.command("schema")
def schema_cmd() -> None:
    """Print the recipe JSON Schema (for editor completion and checking)."""
    from reidcli.recipe.schema import Recipe

    sys.stdout.write(json.dumps(Recipe.model_json_schema(by_alias=True), indent=2) + "\n")
