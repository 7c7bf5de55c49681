"""`reid recipe validate|show|schema`."""

import json
import sys
from pathlib import Path

import typer

from reidcli.cli.options import SET_HELP
from reidcli.errors import RecipeError

recipe_app = typer.Typer(
    help="Validate recipes, show them resolved, print their JSON Schema.", no_args_is_help=True
)


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
