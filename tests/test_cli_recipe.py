"""The `reid` CLI: help, layering, `reid recipe` commands (run as real subprocesses)."""

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import reid

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_commands_without_importing_torch():
    code = (
        "import sys; sys.argv=['reid','--help']\n"
        "from reidcli.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "recipe" in out.stdout


def test_import_cli_does_not_import_torch():
    code = "import sys, reidcli.cli; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_validate_all_recipes_exit_0():
    files = sorted(str(p) for p in (ROOT / "recipes").glob("*.yaml"))
    out = reid("recipe", "validate", *files)
    assert out.returncode == 0, out.stderr


def test_validate_bad_recipe_exit_2(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("loss:\n  - {name: cross_entropy}\n  - {name: triplet_semihard, margin: -1}\n")
    out = reid("recipe", "validate", str(bad))
    assert out.returncode == 2
    assert "loss.1.margin: Input should be greater than 0" in out.stderr
    assert "Traceback" not in out.stderr


def test_show_with_override():
    out = reid("recipe", "show", "recipes/lmbn_n.yaml", "--set", "optim.lr=3e-4")
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert resolved["optim"]["lr"] == 0.0003
    assert resolved["train"]["amp"] == "off"  # defaults are filled in


def test_show_missing_file_exit_2():
    out = reid("recipe", "show", "recipes/missing.yaml")
    assert out.returncode == 2
    assert "recipe file not found" in out.stderr and "Traceback" not in out.stderr


def test_schema_command_matches_committed():
    out = reid("recipe", "schema")
    assert out.returncode == 0
    assert out.stdout == (ROOT / "recipes" / "schema.json").read_text()
