"""Each option has one definition: the recipe schema. The CLI flags only say "given" or not."""

import re
from pathlib import Path

import click
import typer.main

from reidcli.cli import app
from reidcli.cli.eval_cmd import FLAG_KEYS, flag_overrides
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
    for name in ("eval", "rerank"):
        for param in command(name).params:
            if param.name in FLAG_KEYS:
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
    overrides = flag_overrides(rerank=True, k1=30, lambda_=0.5, distance="euclidean", seed=3)
    cfg = load_recipe(None, overrides).eval
    assert cfg.rerank.enabled and cfg.rerank.k1 == 30 and cfg.rerank.lambda_ == 0.5
    assert cfg.rerank.k2 == Eval().rerank.k2  # not given: the schema default
    assert cfg.distance == "euclidean" and cfg.seed == 3
    assert flag_overrides() == []


def test_help_shows_the_schema_defaults():
    text = " ".join(p.help or "" for p in command("rerank").params)
    assert f"default {Eval().rerank.k1}" in text and f"default {Eval().rerank.lambda_}" in text
