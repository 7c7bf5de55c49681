"""Recipe loading: YAML file → dict → `--set` overrides → validation, with precise errors.

The whole schema (`reidcli.recipe.schema`) is imported when a whole recipe is validated, and
yaml when a file or an override is read: `load_eval` without a recipe file validates the
`eval` section alone, which is all that scoring a features file needs.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from reidcli.errors import RecipeError

if TYPE_CHECKING:
    from reidcli.recipe.run import Eval
    from reidcli.recipe.schema import Recipe

Loc = tuple[str | int, ...]
# Recipe overrides: `KEY=VALUE` strings as `--set` takes them, or a {dotted key: value} mapping.
Overrides = typing.Sequence[str] | typing.Mapping[str, Any]


def as_overrides(overrides: Overrides) -> list[str]:
    """`KEY=VALUE` strings from strings or a {dotted key: value} mapping (values as JSON)."""
    import json

    if isinstance(overrides, typing.Mapping):
        return [f"{key}={json.dumps(value, default=str)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        raise RecipeError(f"overrides must be a list of KEY=VALUE strings, got {overrides!r}")
    return list(overrides)


def load_recipe(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Load and validate a recipe.

    Args:
        path: YAML file; None starts from the schema defaults.
        overrides: `a.b=c` strings; each value is parsed as YAML.

    Raises:
        RecipeError: the file is missing or malformed, or a value is invalid. The message names
            the file, the field path, the reason and, where known, the YAML line.
    """
    from reidcli.recipe.loss import parse_loss_string

    source = str(path) if path is not None else "<defaults>"
    raw, lines = ({}, {}) if path is None else _read_yaml(Path(path))
    if "loss" in raw and isinstance(raw["loss"], str):
        try:
            raw["loss"] = parse_loss_string(raw["loss"])
        except ValueError as err:
            raise RecipeError(_format(source, ("loss",), str(err), lines)) from None
    set_paths = {apply_override(raw, text): origin(text) for text in overrides}
    return validate_recipe(raw, source, lines, set_paths)


def load_eval(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> Eval:
    """The `eval` section of a recipe: what scoring a features file reads.

    With a recipe file the whole recipe is validated (as `load_recipe`). Without one, the
    defaults of the `eval` section with `overrides` applied are validated alone. Either way an
    override outside `eval.` is refused: nothing but the `eval` section acts on features.

    Raises:
        RecipeError: as `load_recipe`, or an override names another section.
    """
    raw: dict = {}
    locs = [apply_override(raw, text) for text in overrides]
    outside = [text for text, loc in zip(overrides, locs, strict=True) if loc[0] != "eval"]
    if outside:
        raise RecipeError(
            f"--set {outside[0]!r}: features are scored with the eval section only; "
            "give eval.* keys (for example eval.distance=euclidean)"
        )
    if path is not None:
        return load_recipe(path, overrides).eval
    from reidcli.recipe.run import Eval

    set_paths = {loc: origin(text) for loc, text in zip(locs, overrides, strict=True)}
    return _validate(Eval, raw.get("eval", {}), "<defaults>", None, set_paths, ("eval",))


def override_recipe(
    recipe: Recipe, overrides: typing.Sequence[str] = (), source: str = "<recipe>"
) -> Recipe:
    """A validated copy of `recipe` with `a.b=c` overrides applied (as `load_recipe` does).

    Raises:
        RecipeError: an override names no field or gives an invalid value.
    """
    if not overrides:
        return recipe
    raw = recipe.to_dict()
    set_paths = {apply_override(raw, text): origin(text) for text in overrides}
    return validate_recipe(raw, source, None, set_paths)


def validate_recipe(
    raw: dict, source: str = "<recipe>", lines: dict | None = None, set_paths: dict | None = None
) -> Recipe:
    """Validate a plain dict as a `Recipe`, turning pydantic errors into one `RecipeError`."""
    from reidcli.recipe.schema import Recipe

    return _validate(Recipe, raw, source, lines, set_paths)


def _validate(
    model: type[BaseModel],
    raw: Any,
    source: str,
    lines: dict | None,
    set_paths: dict | None,
    prefix: Loc = (),
):
    """`model.model_validate(raw)`, its errors shown at `prefix` + their location."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        messages = []
        for item in err.errors():
            shown, parent = _walk(item["loc"], model)
            loc, reason = (*prefix, *shown), item["msg"]
            if item["type"] == "extra_forbidden":
                reason = "unknown key" + _suggest(shown, parent)
            elif reason.startswith("Value error, "):
                reason = reason.removeprefix("Value error, ")
            given = _covered(loc, set_paths or {})
            if given is not None and given != "--set":  # a command-line flag: name it
                path = ".".join(str(p) for p in loc)
                messages.append(f"{given}: {reason} (recipe key {path})")
            else:
                where = " (from --set)" if given else ""
                messages.append(_format(source, loc, reason, lines or {}) + where)
        raise RecipeError("\n".join(messages)) from None


def apply_override(raw: dict, text: str) -> Loc:
    """Apply one `a.b.c=value` override in place and return its key path."""
    key, sep, value_text = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {text!r}: expected KEY=VALUE, for example optim.lr=3e-4")
    try:
        value = parse_yaml(value_text, f"--set {text!r}")[0] if value_text.strip() else ""
    except RecipeError as err:
        raise RecipeError(f"--set {text!r}: value is not valid YAML ({err})") from None
    parts: list[str | int] = [
        int(p) if p.isascii() and p.isdigit() else p for p in key.strip().split(".")
    ]
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(str(p) for p in parts[: depth + 1])
        if isinstance(node, list):
            if not isinstance(part, int) or part >= len(node):
                raise RecipeError(f"--set {text!r}: {where}: no such list item")
        elif isinstance(node, dict):
            if not last and isinstance(parts[depth + 1], int):
                if not isinstance(node.get(part), list):
                    raise RecipeError(f"--set {text!r}: {where}: no such list in the recipe")
            elif not last and not isinstance(node.get(part), dict):
                node[part] = {}
        else:
            raise RecipeError(f"--set {text!r}: {where}: parent is not a mapping or list")
        if last:
            node[part] = value
        else:
            node = node[part]
    return tuple(parts)


# A recipe is a few kilobytes; refusing larger files bounds the work a recipe reader does.
MAX_RECIPE_BYTES = 1 << 20


def _read_yaml(path: Path) -> tuple[dict, dict[Loc, int]]:
    if not path.exists():
        raise RecipeError(f"{path}: recipe file not found")
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory, expected a YAML recipe file")
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError(
                f"{path}: {size:,} bytes is not a recipe (at most {MAX_RECIPE_BYTES:,} bytes)"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"{path}: cannot read recipe ({err})") from None
    data, node = parse_yaml(text, str(path))
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise RecipeError(
            f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}"
        )
    lines: dict[Loc, int] = {}
    _collect_lines(node, (), lines)
    return data, lines


def parse_yaml(text: str, source: str) -> tuple[Any, Any]:
    """The data and the composed node of one YAML document, read by `RecipeLoader`.

    Raises:
        RecipeError: malformed YAML, an alias, a duplicate key, or nesting too deep to read.
    """
    import yaml

    from reidcli.recipe.yaml_loader import RecipeLoader

    loader = None
    try:
        loader = RecipeLoader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise RecipeError(f"{source}: malformed YAML{line}: {problem}") from None
    except RecursionError:
        raise RecipeError(f"{source}: YAML nested too deeply to be a recipe") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, node


def _collect_lines(node: Any, loc: Loc, out: dict[Loc, int]) -> None:
    """Map every key path of a composed YAML document to its 1-based line."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*loc, key_node.value)
            out[child] = key_node.start_mark.line + 1
            _collect_lines(value_node, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*loc, index)
            out[child] = item.start_mark.line + 1
            _collect_lines(item, child, out)


def _format(source: str, loc: Loc, reason: str, lines: dict[Loc, int]) -> str:
    if not loc:  # a check across sections
        return f"{source}: {reason}"
    path = ".".join(str(p) for p in loc)
    line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
    where = f" (line {line})" if line is not None else ""
    return f"{source}: {path}: {reason}{where}"


def _covered(loc: Loc, set_paths: dict) -> str | None:
    """Where the value at `loc` was given on the command line ("--set" or a flag), or None."""
    if not loc:  # a check across sections: no one override made it fail
        return None
    found = [
        origin for p, origin in set_paths.items() if loc[: len(p)] == p or p[: len(loc)] == loc
    ]
    return found[-1] if found else None


class FlagOverride(str):
    """A `KEY=VALUE` override that a command-line flag stands for; errors name the flag."""

    flag: str

    def __new__(cls, text: str, flag: str) -> FlagOverride:
        item = super().__new__(cls, text)
        item.flag = flag
        return item


def origin(text: str) -> str:
    """What gave an override: its flag, or "--set"."""
    return getattr(text, "flag", "--set")


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[Loc, type[BaseModel] | None]:
    """Follow a pydantic error location through the schema from `root`.

    Returns the location without discriminator tags (what the user wrote) and the model class
    that holds the last element.
    """
    shown: list[str | int] = []
    current: Any = root
    parent: type[BaseModel] | None = None
    for elem in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            parent = current
            field = _field_by_key(current, elem)
            shown.append(elem)
            current = field.annotation if field is not None else None
        elif isinstance(current, list):  # union members, elem is the discriminator tag
            current = next((m for m in current if _tag(m) == elem), None)
        elif current is not None and typing.get_origin(current) in (tuple, list):
            shown.append(elem)
            current = typing.get_args(current)[0]
        else:
            shown.append(elem)
            current = None
    return tuple(shown), parent


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated/Optional; a union of models becomes the list of its members."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) == 1:
            return models[0]
        return models or None
    return annotation


def _field_by_key(model: type[BaseModel], key: Any):
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def _tag(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("name")
    return field.default if field is not None else None


def _suggest(shown: Loc, parent: type[BaseModel] | None) -> str:
    if parent is None or not shown:
        return ""
    keys = [f.alias or name for name, f in parent.model_fields.items()]
    close = difflib.get_close_matches(str(shown[-1]), keys, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (valid keys: {', '.join(keys)})"
