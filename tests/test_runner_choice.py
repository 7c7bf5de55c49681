"""`reid eval` / `reid embed` of a checkpoint through ONNX Runtime: an export cached beside the
checkpoint, chosen by `runner`, invalidated when the checkpoint changes, and the same metrics as
PyTorch."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reidcli import api
from reidcli.engine.checkpoint import load_checkpoint, save_checkpoint
from reidcli.errors import RecipeError
from reidcli.verbs import backend
from tests.test_export import make_checkpoint, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
KEYS = ("rank1", "rank5", "mAP", "mINP")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runner")
    data = folder / "data"
    api.prepare("synthetic", out=data, ids=10, cams=3, images_per_id=6, size=(64, 32))
    # the legacy exporter: seconds where the dynamo exporter takes tens of them
    checkpoint = make_checkpoint(
        folder, "osnet_x0_25", data={"root": str(data)}, export={"exporter": "legacy"}
    )
    return checkpoint.parent


def cached(folder: Path) -> list[str]:
    cache = folder / backend.CACHE_DIR
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


def test_onnxruntime_gives_the_metrics_of_pytorch_and_is_cached(run_folder):
    eager = api.evaluate(run_folder, runner="pytorch")
    assert eager.runner == "pytorch" and not cached(run_folder)
    fast = api.evaluate(run_folder, runner="onnxruntime")
    assert fast.runner == "onnxruntime"
    for key in KEYS:
        assert getattr(fast.metrics, key) == pytest.approx(getattr(eager.metrics, key), abs=1e-4)
    names = cached(run_folder)
    assert len(names) == 2 and names[0].endswith(".onnx") and names[1].endswith(".metadata.json")
    assert json.loads((run_folder / "eval.json").read_text())["runner"] == "onnxruntime"
    # auto takes the cached export even for a small job
    assert api.evaluate(run_folder).runner == "onnxruntime"


def test_the_cache_is_recorded_as_the_runs_own_output(tmp_path):
    from reidcli.outputs import RECORD, OutputFolder

    data = tmp_path / "data"
    api.prepare("synthetic", out=data, ids=4, cams=2, images_per_id=4, size=(64, 32))
    run = tmp_path / "run"
    with OutputFolder.open(run, "run") as folder:
        folder.own("last.pt")
        make_checkpoint(run, "osnet_x0_25", data={"root": str(data)}, export={"exporter": "legacy"})
    api.evaluate(run, runner="onnxruntime")
    files = json.loads((run / RECORD).read_text())["files"]
    assert sum(name.startswith(f"{backend.CACHE_DIR}/") for name in files) == 2
    # so a new run over it with overwrite removes the cache with the rest
    with OutputFolder.open(run, "run", overwrite=True):
        pass
    assert not (run / backend.CACHE_DIR).exists()


def test_auto_keeps_pytorch_for_a_small_job_without_a_cached_export(tmp_path):
    data = tmp_path / "data"
    api.prepare("synthetic", out=data, ids=4, cams=2, images_per_id=4, size=(64, 32))
    make_checkpoint(tmp_path, "osnet_x0_25", data={"root": str(data)})
    assert api.evaluate(tmp_path).runner == "pytorch" and not cached(tmp_path)


def test_a_changed_checkpoint_gets_a_new_export_and_the_stale_one_goes(run_folder, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    checkpoint = folder / "last.pt"
    state = load_checkpoint(run_folder / "last.pt")
    save_checkpoint(checkpoint, state)
    first = api.evaluate(folder, runner="onnxruntime")
    before = cached(folder)
    with torch.no_grad():
        first_conv = next(k for k, v in state["model"].items() if v.ndim == 4)
        state["model"][first_conv].mul_(0.5)
    save_checkpoint(checkpoint, state)
    second = api.evaluate(folder, runner="onnxruntime")
    after = cached(folder)
    assert len(after) == 2 and after != before  # one export, of the new checkpoint only
    assert second.runner == "onnxruntime" and first.metrics.mAP >= 0


def test_onnxruntime_refused_where_the_export_cannot_stand_in(run_folder):
    with pytest.raises(RecipeError, match=r"eval\.amp resolves to bf16"):
        api.evaluate(run_folder, runner="onnxruntime", overrides=["eval.amp=bf16"])
    with pytest.raises(RecipeError, match="features are embedded"):
        api.evaluate(features="features.npz", runner="pytorch")  # nothing to run: not ignored
    # auto falls back to PyTorch and says why
    recipe = _recipe(run_folder, "bf16")
    choice = backend.choose("auto", run_folder / "last.pt", recipe, "cpu", 10**6)
    assert choice.backend == "pytorch" and "bf16" in choice.reason


def _recipe(folder: Path, amp: str):
    from reidcli.inference.checkpoints import load_trained_model

    _, recipe = load_trained_model(folder / "last.pt")
    return recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"amp": amp})})


def test_embed_runs_the_cached_export_and_matches_pytorch(run_folder, tmp_path):
    data = run_folder / "data"
    eager = api.embed(run_folder, dataset=data, out=tmp_path / "a.npz", runner="pytorch")
    fast = api.embed(run_folder, dataset=data, out=tmp_path / "b.npz", runner="onnxruntime")
    assert (eager.backend, fast.backend) == ("pytorch", "onnxruntime")
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    np.testing.assert_allclose(a["query_features"], b["query_features"], atol=1e-4)


def test_cli_says_which_runner_embedded(run_folder, capsys):
    code, _, stderr = run_cli(capsys, "eval", str(run_folder), "--runner", "onnxruntime")
    assert code == 0 and "embedding with onnxruntime" in stderr, stderr
    onnx = next((run_folder / backend.CACHE_DIR).glob("*.onnx"))
    out = str(run_folder / "x.npz")
    code, _, stderr = run_cli(
        capsys, "embed", str(onnx), str(run_folder / "data"), "--runner", "pytorch", "--out", out
    )
    assert code == 2 and "runner applies to runs and checkpoints" in stderr, stderr
