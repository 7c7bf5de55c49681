"""What the commands share: options made from the options models' fields, parsers of compound
values, and the mapping from validation errors back to the flags that set them.

A flag that stands for a field defaults to None, "not given": the model supplies the default,
the bounds and the description, and `--help` reads the default from the field. Nothing here
writes a default or a choice list of its own.
"""

from __future__ import annotations

import enum
import json
import re
import typing
from collections.abc import Callable

import typer
from pydantic import BaseModel

from reidcli.errors import UsageError
from reidcli.recipe.loading import FlagOverride
from reidcli.recipe.options import OptionsError

SET_HELP = "Override a recipe value, e.g. --set optim.lr=3e-4 (value parsed as YAML); repeatable."


def field_of(model: type[BaseModel], path: str):
    """The pydantic field at a dotted `path` of `model` (`hnsw.m`: HnswOptions.m)."""
    head, _, rest = path.partition(".")
    info = model.model_fields[head]
    if not rest:
        return info
    inner = next(
        a for a in _flatten(info.annotation) if isinstance(a, type) and issubclass(a, BaseModel)
    )
    return field_of(inner, rest)


def _flatten(annotation) -> list:
    args = typing.get_args(annotation)
    return [a for arg in args for a in _flatten(arg)] if args else [annotation]


def default_of(model: type[BaseModel], path: str):
    """A field's default, as the help shows it (tuples as HxW or comma-separated)."""
    info = field_of(model, path)
    value = info.default
    if isinstance(value, tuple):  # a (height, width) pair as HxW, other tuples comma-separated
        pair = [a for a in typing.get_args(info.annotation) if a is not type(None)]
        size = typing.get_args(pair[0]) == (int, int) if pair else False
        size |= typing.get_args(info.annotation) == (int, int)
        return ("x" if size else ",").join(map(str, value))
    return value


def help_of(model: type[BaseModel], path: str, prefix: str = "") -> str:
    """The field's description with its default: the text `--help` shows for its flag."""
    info = field_of(model, path)
    text = (info.description or path).rstrip(".")
    text = (text[0].lower() if prefix else text[0].upper()) + text[1:]
    default = default_of(model, path)
    shown = f" (default {default})" if default not in (None, False, "") else ""
    return f"{prefix}{text}{shown}."


def choices(model: type[BaseModel], path: str) -> type[enum.StrEnum]:
    """A Typer choice type of a Literal field."""
    values = [a for a in _flatten(field_of(model, path).annotation) if isinstance(a, str)]
    return enum.StrEnum(path.replace(".", "_").title(), {v: v for v in values})


def option(
    model: type[BaseModel], path: str, *decls: str, prefix: str = "", **kwargs
) -> typer.models.OptionInfo:
    """A Typer option for a field: default None (not given), help read from the field.

    The option remembers its field (`.field`), so that a test can hold every `--help`
    against the models.
    """
    info = typer.Option(
        None, *decls, help=help_of(model, path, prefix), show_default=False, **kwargs
    )
    info.field = (model, path)  # type: ignore[attr-defined]
    return info


def recipe_option(key: str, *decls: str, **kwargs) -> typer.models.OptionInfo:
    """A flag that stands for the recipe value at dotted `key` (`eval.rerank.k1`): default
    None (not given), help from the schema's field; `recipe_overrides` turns it into an
    override of that key."""
    model, path = schema_field(key)
    info = option(model, path, *decls, prefix="Recipe: ", **kwargs)
    info.recipe_key = key  # type: ignore[attr-defined]
    return info


def schema_field(key: str) -> tuple[type[BaseModel], str]:
    """The section model and field name of a dotted recipe key (`eval.rerank.k1`: Rerank, k1;
    a field's YAML alias, `lambda`, names it too)."""
    from reidcli.recipe.model import Model
    from reidcli.recipe.run import Bench, Eval, Export

    head, *rest = key.split(".")
    model: type[BaseModel] = {"eval": Eval, "export": Export, "bench": Bench, "model": Model}[head]
    for part in rest[:-1]:
        model = _flatten(model.model_fields[part].annotation)[0]
    name = rest[-1]
    if name not in model.model_fields:  # an alias
        name = next(n for n, f in model.model_fields.items() if f.alias == name)
    return model, name


def recipe_overrides(command: Callable, values: dict) -> list[str]:
    """`KEY=VALUE` recipe overrides for the recipe flags of `command` that were given (`values`:
    the command's arguments); each names its flag when the recipe refuses it."""
    import inspect

    out = []
    for name, parameter in inspect.signature(command).parameters.items():
        key = getattr(parameter.default, "recipe_key", None)
        value = values.get(name)
        if key is None or value is None or value == []:
            continue
        raw = getattr(value, "value", value)
        if isinstance(raw, list | tuple):
            raw = [getattr(v, "value", v) for v in raw]
        flag = parameter.default.param_decls[0].split("/")[0]
        out.append(FlagOverride(f"{key}={json.dumps(raw)}", f"{flag} {raw}"))
    return out


def flag_name(path: str) -> str:
    """The flag of a field unless its command names another (`index_topk`: --index-topk)."""
    return "--" + path.rsplit(".", 1)[-1].replace("_", "-")


def build(model, given: dict[str, object], flags: dict[str, str] | None = None):
    """The options model from the flags that were given (None: not given).

    Args:
        model: an `Options` class.
        given: field path (dotted for nested models) -> value.
        flags: field path -> flag, where the flag is not `flag_name(path)`.

    Raises:
        UsageError: each invalid field named by the flags that set it.
    """
    values: dict = {}
    set_paths = [path for path, value in given.items() if value is not None]
    for path in set_paths:
        node = values
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = getattr(given[path], "value", given[path])
    try:
        return model.build(values)
    except OptionsError as err:
        raise flag_error(err, flags or {}, set_paths, model) from None


def flag_error(
    err: OptionsError, flags: dict[str, str], set_paths: list[str], model=None
) -> UsageError:
    """An `OptionsError` in the command's words: each field shown as the flags that set it (a
    nested model's problem names the flags of its fields that were given), and field names
    in the reasons as their flags."""

    def shown(path: str) -> str:
        inside = [p for p in set_paths if p == path or p.startswith(path + ".")]
        names = [flags.get(p) or flag_name(p) for p in inside or [path]]
        return "/".join(dict.fromkeys(names))

    names = set(model.model_fields) if model is not None else set()
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names, key=len)[::-1])) + r")\b")

    def worded(reason: str) -> str:
        return (
            pattern.sub(lambda m: flags.get(m.group(1)) or flag_name(m.group(1)), reason)
            if names
            else reason
        )

    parts = [worded(reason) if path == "(options)" else f"{shown(path)}: {worded(reason)}"
             for path, reason in err.problems]  # fmt: skip
    return UsageError("; ".join(parts))


def parse_numbers(kind: Callable, count: int, sep: str, example: str) -> Callable:
    """A Typer callback reading `count` numbers separated by `sep` (None stays None)."""

    def parse(text: str | None):
        if text is None:
            return None
        try:
            values = tuple(kind(v) for v in text.lower().split(sep))
        except ValueError:
            raise typer.BadParameter(f"must be {example}; got {text!r}") from None
        if len(values) != count:
            raise typer.BadParameter(f"must be {example}; got {text!r}")
        return values

    return parse


def parse_list(kind: Callable, sep: str, flag: str, example: str) -> Callable:
    """A Typer callback reading one or more numbers separated by `sep` (None stays None); bad
    text is a one-line usage error naming `flag`."""

    def parse(text: str | None):
        if text is None:
            return None
        try:
            return tuple(kind(v) for v in text.split(sep) if v.strip())
        except ValueError:
            raise UsageError(f"{flag}: must be {example}; got {text!r}") from None

    return parse


parse_size = parse_numbers(int, 2, "x", "HEIGHTxWIDTH, e.g. 384x128")
parse_fars = parse_list(float, ",", "--far", "rates separated by commas, e.g. 0.01,0.001")
parse_rgb = parse_numbers(float, 3, ",", "three numbers R,G,B")


def json_option() -> typer.models.OptionInfo:
    return typer.Option(False, "--json", help="Print one JSON document on stdout.")


def quiet_option() -> typer.models.OptionInfo:
    return typer.Option(False, "--quiet", "-q", help="No progress output.")


def print_json(document: object, indent: int | None = 2) -> None:
    """One JSON document on stdout (`indent` None: on one line)."""
    import sys

    sys.stdout.write(json.dumps(document, indent=indent, default=str) + "\n")


__all__ = [
    "SET_HELP", "UsageError", "build", "choices", "default_of", "field_of", "flag_error",
    "flag_name", "help_of", "json_option", "option", "parse_fars", "parse_list", "parse_rgb",
    "parse_size", "print_json",
    "quiet_option", "recipe_option", "recipe_overrides", "schema_field",
]  # fmt: skip
