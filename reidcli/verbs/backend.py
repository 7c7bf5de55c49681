"""Which backend embeds a trained model for `reid eval` and `reid embed` of a run or checkpoint.

On a CPU, ONNX Runtime runs the exported graph of a re-ID model about twice as fast as PyTorch
eager (LMBN_n at batch 32 on two AVX2 cores: 11.3 against 7.0 images/s, BENCHMARKS.md). So where
the evaluation precision is fp32 and the `export` extra is installed, the model is exported once
to ONNX (`reid export`'s exporter and parity check), kept beside the checkpoint in
`.reid-cache/`, and embedded by ONNX Runtime. The cached file is named by the checkpoint's
SHA-256 and the settings of the graph (flip, normalisation, input), so a changed checkpoint gets
a new export and the stale one is removed.

`backend: auto` (the default) uses a cached export when there is one, and makes one when the job
is large enough to repay it (`AUTO_MIN_IMAGES`); `pytorch` and `onnxruntime` force either (the
latter fails with the reason where it cannot run). A parity failure falls back to PyTorch with a
warning. The backend used is always reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from reidcli import __version__
from reidcli.errors import ParityError, RecipeError
from reidcli.outputs import register_output
from reidcli.reporting import Reporter

log = logging.getLogger(__name__)

CACHE_DIR = ".reid-cache"
# An LMBN_n export takes about a minute on two cores and saves about 0.05 s an image there: a
# job of this many images repays it; smaller ones run in PyTorch unless an export is cached.
AUTO_MIN_IMAGES = 1000


@dataclass(frozen=True)
class Choice:
    """The backend of one job and why (`path`: the cached export, for onnxruntime)."""

    backend: str
    reason: str
    path: Path | None = None


def choose(asked: str, checkpoint: Path, recipe, device: str, num_images: int) -> Choice:
    """The backend for embedding `num_images` images with `checkpoint`.

    Raises:
        RecipeError: onnxruntime was asked for where it cannot run (the reason is named).
    """
    if asked == "pytorch":
        return Choice("pytorch", "asked for")
    problem = _unavailable(recipe, device)
    if problem is not None:
        if asked == "onnxruntime":
            raise RecipeError(f"backend onnxruntime: {problem}")
        return Choice("pytorch", problem)
    path = cache_path(checkpoint, recipe)
    if path.is_file():
        return Choice("onnxruntime", f"the export cached at {path}", path)
    if asked == "auto" and num_images < AUTO_MIN_IMAGES:
        return Choice(
            "pytorch",
            f"{num_images} images: fewer than {AUTO_MIN_IMAGES}, an ONNX export would not pay "
            "for itself (backend onnxruntime makes one)",
        )
    return Choice("onnxruntime", f"a new export cached at {path}", path)


def onnx_runner(
    asked: str,
    checkpoint: Path,
    recipe,
    recipe_path: str | None,
    device: str,
    num_images: int,
    reporter: Reporter,
):
    """The ONNX Runtime runner that embeds instead of PyTorch, or None for PyTorch; the reporter
    says which runner embeds and why."""
    choice = choose(asked, checkpoint, recipe, device, num_images)
    runner = None
    if choice.backend == "onnxruntime":
        runner = open_cached(choice, checkpoint, recipe, recipe_path, reporter)
        if runner is None:
            choice = Choice("pytorch", "the ONNX export failed its parity check")
    reporter.message(f"embedding with {choice.backend}: {choice.reason}")
    return runner


def _unavailable(recipe, device: str) -> str | None:
    """Why ONNX Runtime cannot embed this model here, or None."""
    from reidcli.engine.runtime import resolve_amp, resolve_device

    target = resolve_device(device)
    if target.type != "cpu":
        return f"the model runs on {target.type}; the cached ONNX export is for CPUs"
    amp = resolve_amp(recipe.eval.amp, target)
    if amp != "off":
        return f"eval.amp resolves to {amp} here; the cached export computes in fp32"
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnx and onnxruntime are not installed (pip install 'reid[export]')"
    return None


def cache_path(checkpoint: Path, recipe) -> Path:
    """Where the export of `checkpoint` with `recipe`'s graph settings is cached."""
    return checkpoint.parent / CACHE_DIR / f"{checkpoint.stem}-{cache_key(checkpoint, recipe)}.onnx"


def cache_key(checkpoint: Path, recipe) -> str:
    """The checkpoint's content and everything the exported graph depends on."""
    import onnxruntime
    import torch

    from reidcli.export.metadata import file_sha256

    data = recipe.data
    settings: dict[str, object] = {
        "checkpoint_sha256": file_sha256(checkpoint),
        "flip": recipe.eval.flip,
        "normalize": recipe.eval.normalize,
        "input": [data.height, data.width, list(data.mean), list(data.std)],
        "opset": recipe.export.opset,
        "exporter": recipe.export.exporter,
        "versions": [__version__, torch.__version__, onnxruntime.__version__],
    }
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_cached(
    choice: Choice, checkpoint: Path, recipe, recipe_path: str | None, reporter: Reporter | None
):
    """The ONNX Runtime runner of the cached export, exporting it first when it is missing.

    Returns:
        The runner, or None when the export fails its parity check (a warning says so and the
        caller embeds with PyTorch).
    """
    from reidcli.inference.runners import load_exported_runner
    from reidcli.recipe.options import ExportOptions
    from reidcli.verbs.export import export

    path = choice.path
    assert path is not None
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        if reporter is not None:
            reporter.message(f"exporting {checkpoint} to ONNX for ONNX Runtime (once): {path}")
        overrides = [
            "export.formats=[onnx]", "export.check=true", "export.fp16=false",
            "export.static_batch=null", "export.include_preprocessing=false",
            f"eval.flip={str(recipe.eval.flip).lower()}", f"eval.normalize={recipe.eval.normalize}",
        ]  # fmt: skip
        try:
            export(checkpoint, ExportOptions(out=str(path), recipe=recipe_path), overrides)
        except ParityError as err:
            log.warning("embedding with PyTorch: the ONNX export failed its parity check (%s)", err)
            return None
        _remove_stale(path, checkpoint)
        for name in (path.name, f"{path.name}.metadata.json"):  # the run's record owns them
            register_output(checkpoint.parent, f"{CACHE_DIR}/{name}")
    return load_exported_runner(path, "cpu")


def _remove_stale(current: Path, checkpoint: Path) -> None:
    """Exports of earlier versions of this checkpoint (another hash), with their sidecars."""
    for other in current.parent.glob(f"{checkpoint.stem}-*.onnx*"):
        if other.name not in (current.name, f"{current.name}.metadata.json"):
            other.unlink(missing_ok=True)
