"""Each option has one definition: the recipe schema. The CLI flags only say "given" or not."""

import re
from pathlib import Path

import click
import typer.main

from reidcli.cli import app
from reidcli.cli.eval_cmd import eval_cmd
from reidcli.cli.options import recipe_overrides
from reidcli.recipe import load_recipe
from reidcli.recipe.run import Eval

PACKAGE = Path(__file__).resolve().parents[1] / "reidcli"
# A literal default of an evaluation option written outside the schema, e.g. `k1: int = 20`,
# `k1=20`, `"k1": 20` or `lambda_=0.3` (a dotted recipe key in an example, `eval.rerank.k1`, is
# an override, not a default).
LITERAL_DEFAULT = re.compile(
    r"""["']?(?<!\.)\b(k1|k2|lambda_?|qe_k|qe_alpha)\b["']?\s*(:\s*[\w |]+)?\s*[=:]\s*[\d.]+"""
)


def command(name: str) -> click.Command:
    return typer.main.get_command(app).commands[name]


def test_evaluation_flags_default_to_not_given():
    import inspect

    for name in ("eval", "rerank"):
        keys = {
            p: getattr(info.default, "recipe_key", None)
            for p, info in inspect.signature(command(name).callback).parameters.items()
        }
        for param in command(name).params:
            if keys.get(param.name):
                assert param.default is None, (name, param.name, param.default)


def test_no_second_copy_of_an_option_default():
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "recipe":
            continue  # the schema: the one place defaults are written
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if LITERAL_DEFAULT.search(line):
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_metric_keys_are_defined_once():
    pattern = re.compile(r"""["']rank1["'],\s*["']rank5["']""")
    places = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert len(places) == 1, places


def test_flags_become_recipe_overrides():
    given = {"rerank": True, "k1": 30, "lambda_": 0.5, "distance": "euclidean", "seed": 3}
    overrides = recipe_overrides(eval_cmd, given)
    cfg = load_recipe(None, overrides).eval
    assert cfg.rerank.enabled and cfg.rerank.k1 == 30 and cfg.rerank.lambda_ == 0.5
    assert cfg.rerank.k2 == Eval().rerank.k2  # not given: the schema default
    assert cfg.distance == "euclidean" and cfg.seed == 3
    assert recipe_overrides(eval_cmd, {}) == []


def test_help_shows_the_schema_defaults():
    text = " ".join(p.help or "" for p in command("rerank").params)
    assert f"default {Eval().rerank.k1}" in text and f"default {Eval().rerank.lambda_}" in text


# Flags that are not options of a model: how the command presents its result, the recipe
# overrides, presets and files of `reid bench`, and the bench input size (data.height/width).
PRESENTATION = {"as_json", "json_out", "quiet", "overrides", "quick", "compare", "input_size"}


def every_command():
    """(name, click command) of every command and subcommand."""
    root = typer.main.get_command(app)
    for name, cmd in root.commands.items():
        if isinstance(cmd, click.Group):
            yield from ((f"{name} {sub}", c) for sub, c in cmd.commands.items())
        else:
            yield name, cmd


def test_every_flag_default_and_choice_list_comes_from_an_options_model():
    import inspect
    import typing

    from reidcli.cli.options import default_of, field_of

    checked = 0
    for name, cmd in every_command():
        if cmd.callback is None:
            continue
        signature = inspect.signature(cmd.callback)
        params = {p.name: p for p in cmd.params}
        for pname, parameter in signature.parameters.items():
            info = parameter.default
            if not isinstance(info, typer.models.OptionInfo):
                continue
            field = getattr(info, "field", None)
            if field is None:
                assert pname in PRESENTATION or (name == "bench" and pname == "out"), (name, pname)
                assert info.default in (None, False, [], ...), (name, pname, info.default)
                continue
            model, path = field
            assert info.default is None, (name, pname)  # "not given": the model decides
            default = default_of(model, path)
            option = params.get(pname) or next(p for p in cmd.params if p.name == pname)
            help_text = option.help
            if default not in (None, False, ""):
                assert help_text.endswith(f"(default {default}).") or (
                    f"(default {default})" in help_text
                ), (name, pname, help_text)
            choices = getattr(getattr(option, "type", None), "choices", None)
            if choices:
                literal = [a for a in typing.get_args(field_of(model, path).annotation)]
                flat = [v for a in literal for v in (typing.get_args(a) or [a])]
                flat = [v for a in flat for v in (typing.get_args(a) or [a]) if isinstance(v, str)]
                assert list(choices) == flat, (name, pname, choices, flat)
            checked += 1
    assert checked > 80


def test_no_literal_default_in_the_commands():
    """A default written in `cli/` would be a second home of it: every typer.Option there starts
    with None (not given), False/[] (presentation flags) or ... (required)."""
    pattern = re.compile(r"typer\.Option\(\s*([^,\s)]+)")
    found = []
    for path in (PACKAGE / "cli").glob("*.py"):
        for match in pattern.finditer(path.read_text()):
            if match.group(1) not in (
                "None",
                "False",
                "[]",
                "...",
                "*decls",
                'Path("features.npz")',
            ):
                found.append(f"{path.name}: typer.Option({match.group(1)}")
    assert not found, found
