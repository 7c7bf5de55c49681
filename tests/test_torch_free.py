"""`reid eval --features`, `reid rerank`, `reid index` and `reid search` on features never
import torch (whole CLI, real subprocesses)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

# Runs the CLI with an import hook that records and refuses any import of torch (or a
# submodule), then reports the attempts and whether torch got into sys.modules at exit. The
# refusal is not an ImportError, so an optional `try: import torch` cannot swallow it.
DRIVER = """
import atexit, sys, traceback

attempts = []

class RefuseTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            attempts.append("".join(traceback.format_stack(limit=12)))
            raise RuntimeError(f"torch import attempted: {name}")
        return None

sys.meta_path.insert(0, RefuseTorch())

def report():
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print("TORCH-CHECK " + repr((len(attempts), loaded)), file=sys.stderr)
    print("SCHEMA-LOADED " + repr("reidcli.recipe.schema" in sys.modules), file=sys.stderr)
    for stack in attempts:
        print(stack, file=sys.stderr)

atexit.register(report)
sys.argv = ["reid", *sys.argv[1:]]
from reidcli.cli import main
main()
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *args], capture_output=True, text=True, cwd=ROOT
    )


@pytest.fixture(scope="module")
def features_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    g_pids = np.repeat(np.arange(20), 6)
    arrays = {
        # float64, as numpy saves by default, and int32 labels
        "query_features": centres + 0.8 * rng.normal(size=(20, 16)),
        "gallery_features": centres[g_pids] + 0.8 * rng.normal(size=(120, 16)),
        "query_pids": np.arange(20, dtype=np.int32), "gallery_pids": g_pids.astype(np.int32),
        "query_camids": np.zeros(20, np.int32), "gallery_camids": np.ones(120, np.int32),
    }  # fmt: skip
    path = tmp_path_factory.mktemp("torchfree") / "feats.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "args",
    [
        ("eval", "--features", "{f}", "--json"),
        ("eval", "--features", "{f}", "--rerank", "--query-expansion", "--json"),
        ("eval", "--features", "{f}", "--protocol", "cuhk03", "--distance", "euclidean", "--json"),
        ("rerank", "{f}", "--k1", "8", "--k2", "3", "--json"),
    ],
)
def test_features_commands_do_not_import_torch(features_file, args):
    out = _run(*(a.format(f=features_file) for a in args))
    assert out.returncode == 0, out.stderr
    assert "TORCH-CHECK (0, [])" in out.stderr, out.stderr
    doc = json.loads(out.stdout)
    assert 0.3 < doc["mAP"] <= 1.0 and doc["num_query"] == 20


@pytest.mark.parametrize(
    ("args", "whole_schema"),
    [
        (("rerank", "{f}", "--k1", "8", "--json"), False),
        (("eval", "--features", "{f}", "--set", "eval.distance=euclidean", "--json"), False),
        (("eval", "--features", "{f}", "--recipe", "{recipe}", "--json"), True),
    ],
)
def test_features_commands_build_only_the_eval_section(features_file, tmp_path, args, whole_schema):
    # scoring a features file reads the eval section; a recipe file is still validated whole
    recipe = tmp_path / "r.yaml"
    recipe.write_text("eval:\n  distance: euclidean\n")
    out = _run(*(a.format(f=features_file, recipe=recipe) for a in args))
    assert out.returncode == 0, out.stderr
    assert f"SCHEMA-LOADED {whole_schema}" in out.stderr, out.stderr
    assert 0.3 < json.loads(out.stdout)["mAP"] <= 1.0


def test_the_check_detects_torch():
    # the same driver, ending in `import torch` instead of the CLI, reports the attempt
    driver = DRIVER.replace("from reidcli.cli import main\nmain()", "import torch")
    assert driver != DRIVER
    probe = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True)
    assert probe.returncode != 0 and "TORCH-CHECK (1, [])" in probe.stderr


def test_bench_refuses_a_bad_baseline_before_importing_torch(tmp_path):
    out = _run("bench", "--compare", str(tmp_path / "missing.json"))
    assert out.returncode == 1 and "no such baseline file" in out.stderr, out.stderr
    assert "TORCH-CHECK (0, [])" in out.stderr, out.stderr


def test_index_commands_do_not_import_torch(features_file, tmp_path):
    pytest.importorskip("faiss")
    index = tmp_path / "g.idx"
    for args in (
        ("index", "build", str(features_file), "--out", str(index), "--json"),
        ("index", "remove", str(index), "--pid", "3", "--json"),
        ("search", str(index), str(features_file), "--json"),
        ("eval", "--features", str(features_file), "--index", str(index), "--json"),
    ):
        out = _run(*args)
        assert out.returncode == 0, out.stderr
        assert "TORCH-CHECK (0, [])" in out.stderr, out.stderr
    assert len(json.loads(out.stdout)["index"]) > 0
