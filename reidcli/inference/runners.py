"""Models that turn preprocessed image batches into embeddings: a checkpoint, ONNX, a
`torch.export` program (.pt2) or TorchScript.

Every runner takes a batch prepared by the one preprocessing of `InputContract` (float32
normalised, or uint8 for files that normalise in their graph) and returns (B, D) float32 numpy
features. Where the preprocessing comes from is fixed: the recipe for a checkpoint, the metadata
for an exported file, never the file name.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reidcli.errors import CheckpointError, ExportError, RecipeError
from reidcli.export.metadata import (
    METADATA_KEY,
    InputContract,
    check_metadata,
    read_sidecar,
)
from reidcli.export.writers import ARCHIVE_METADATA, require_onnxruntime
from reidcli.recipe.options import EXPORT_BATCH, EXPORT_WORKERS


@dataclass
class Runner:
    """A loaded model and how to feed it.

    Attributes:
        backend: "pytorch", "onnxruntime", "openvino", "torch.export" or "torchscript".
        contract: the input contract every image is prepared with.
        metadata: the export metadata (empty for a checkpoint or a file given --size/--mean/--std).
        source: the file the model came from.
    """

    backend: str
    contract: InputContract
    source: Path
    metadata: dict = field(default_factory=dict)
    _run: object = None

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """(B, D) float32 features of a (B, 3, H, W) batch in the contract's dtype."""
        return self._run(batch)


class RunnerModel(torch.nn.Module):
    """A runner where the evaluation expects a model: `embed` returns the runner's features
    (the flip and normalisation are those the runner's graph was exported with)."""

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self.runner = runner

    def embed(self, images: torch.Tensor, flip: bool, normalize: str) -> torch.Tensor:
        meta = self.runner.metadata
        if meta and (meta.get("flip"), meta.get("normalize")) != (flip, normalize):
            raise RecipeError(
                f"{self.runner.source} was exported with flip {meta.get('flip')} and normalize "
                f"{meta.get('normalize')}, asked for {flip} and {normalize}"
            )
        return torch.from_numpy(self.runner(images.contiguous()))


def load_checkpoint_runner(
    target: str | Path, recipe_path: str | Path | None, device: str
) -> tuple[Runner, object]:
    """A run folder or checkpoint, embedded exactly as `reid eval` does (device, autocast).

    Returns:
        The runner and the recipe.
    """
    from reidcli.engine.checkpoint import find_checkpoint
    from reidcli.engine.runtime import Runtime
    from reidcli.inference.checkpoints import load_trained_model

    checkpoint = find_checkpoint(target)
    model, recipe = load_trained_model(checkpoint, recipe_path)
    runtime = Runtime.from_env(
        device, recipe.eval.amp, recipe.train.channels_last, recipe.train.seed
    )
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    data = recipe.data
    contract = InputContract((data.height, data.width), data.mean, data.std)

    @torch.inference_mode()
    def run(batch: torch.Tensor) -> np.ndarray:
        with runtime.autocast():
            out = model.embed(
                runtime.to_device(batch), flip=recipe.eval.flip, normalize=recipe.eval.normalize
            )
        return out.float().cpu().numpy()

    return Runner("pytorch", contract, checkpoint, {}, run), recipe


def load_exported_runner(
    path: str | Path,
    device: str = "cpu",
    override: InputContract | None = None,
    threads: int | None = None,
) -> Runner:
    """An exported ONNX, OpenVINO, `torch.export` (.pt2) or TorchScript model with its metadata.

    Args:
        path: the `.onnx` file, an OpenVINO folder (`*_openvino_model/`) or `.xml` file, or a
            .pt2 or TorchScript archive (recognised by their content).
        device: auto, cpu or cuda.
        override: the input contract of a file that carries no metadata (--size/--mean/--std);
            refused for a file that carries its own.
        threads: intra-op threads of the ONNX Runtime session (default: its own choice).

    Raises:
        RecipeError: no metadata and no override, or an override for a file with metadata.
        ExportError / CheckpointError: the file cannot be loaded.
    """
    from reidcli.export import openvino

    path = Path(path)
    if openvino.is_openvino(path):
        run, embedded = openvino.open_openvino(path, device, threads)
        meta = embedded if embedded is not None else read_sidecar(openvino.xml_of(path))
        return _with_metadata("openvino", path, run, meta, override)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    if path.suffix.lower() == ".onnx":
        run, embedded = open_onnx(path, device, threads)
        backend = "onnxruntime"
    elif is_program(path):
        run, embedded = open_program(path, device)
        backend = "torch.export"
    elif is_torchscript(path):
        run, embedded = open_torchscript(path, device)
        backend = "torchscript"
    else:
        raise CheckpointError(
            f"{path}: neither an .onnx file, a .pt2 or TorchScript archive, a run folder nor a "
            "checkpoint"
        )
    meta = embedded if embedded is not None else read_sidecar(path)
    return _with_metadata(backend, path, run, meta, override)


def _with_metadata(backend: str, path: Path, run, meta: dict | None, override) -> Runner:
    """The runner of an exported file: its own metadata, or the caller's override."""
    if meta is not None and override is not None:
        raise RecipeError(
            f"{path} carries its preprocessing in its metadata; --size/--mean/--std are only for "
            "files without metadata"
        )
    if meta is None:
        if override is None:
            raise RecipeError(
                f"{path} carries no reid metadata (and has no {path.name}.metadata.json), so its "
                "input size and normalisation are unknown; give --size HxW --mean R,G,B --std R,G,B"
            )
        return Runner(backend, override, path, {}, run)
    meta = check_metadata(meta, str(path))
    return Runner(backend, InputContract.from_metadata(meta), path, meta, run)


def _archive_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip with a `code/` folder (a torch.save checkpoint has none)."""
    return any("/code/" in name for name in _archive_names(path))


def is_program(path: Path) -> bool:
    """A `torch.export.save` archive (.pt2) names its format in an `archive_format` entry."""
    return any(name.endswith("/archive_format") for name in _archive_names(path))


def is_exported(path: Path) -> bool:
    """An exported model (ONNX, OpenVINO, .pt2 or TorchScript), not a run or checkpoint."""
    from reidcli.export.openvino import is_openvino

    return is_openvino(path) or (
        path.is_file()
        and (path.suffix.lower() == ".onnx" or is_program(path) or is_torchscript(path))
    )


def open_onnx(path: Path, device: str = "cpu", threads: int | None = None):
    """An ONNX Runtime session as a batch -> features function, and the embedded metadata."""
    ort = require_onnxruntime()
    providers = ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    elif device == "cuda":
        raise ExportError(
            "--device cuda: this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
        )
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types
        raise CheckpointError(f"{path}: onnxruntime cannot load it ({err})") from None
    first = session.get_inputs()[0]
    name, expected = first.name, first.shape  # e.g. ['batch', 3, 384, 128]
    props = session.get_modelmeta().custom_metadata_map
    meta = json.loads(props[METADATA_KEY]) if METADATA_KEY in props else None

    def run(batch: torch.Tensor) -> np.ndarray:
        fixed = [(i, d) for i, d in enumerate(expected) if isinstance(d, int) and d > 0]
        wrong = [i for i, d in fixed if i < batch.ndim and batch.shape[i] != d]
        if batch.ndim != len(expected) or wrong:
            raise CheckpointError(
                f"{path} takes inputs of shape {expected}, got {list(batch.shape)}: "
                "give the file's own --size (and --batch for a fixed batch)"
            )
        try:
            out = session.run(None, {name: batch.numpy()})[0]
        except Exception as err:  # onnxruntime raises its own exception types
            raise CheckpointError(f"{path}: onnxruntime failed on a batch ({err})") from None
        return out.astype(np.float32, copy=False)

    return run, meta


def _torch_device(device: str) -> str:
    """auto, cpu or cuda as the device a TorchScript or .pt2 model runs on."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("--device cuda was asked for, but no CUDA device is available")
    return device


def open_torchscript(path: Path, device: str = "cpu"):
    """A TorchScript module as a batch -> features function, and the embedded metadata."""
    device = _torch_device(device)
    extra = {ARCHIVE_METADATA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: torch.jit.load cannot load it ({err})") from None
    module.eval()
    meta = json.loads(extra[ARCHIVE_METADATA]) if extra[ARCHIVE_METADATA] else None
    # The JIT's profiling executor spends seconds on the first batches; on the CPU it fuses
    # nothing, so running the graph as traced gives the same numbers without that wait.
    optimize = device != "cpu"

    @torch.no_grad()
    def run(batch: torch.Tensor) -> np.ndarray:
        with torch.jit.optimized_execution(optimize):
            return module(batch.to(device)).float().cpu().numpy()

    return run, meta


def open_program(path: Path, device: str = "cpu"):
    """A `torch.export` program archive as a batch -> features function, and its metadata."""
    device = _torch_device(device)
    extra = {ARCHIVE_METADATA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path), extra_files=extra)
    except Exception as err:  # torch.export.load raises many kinds for a damaged archive
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: torch.export.load cannot load it ({first})") from None
    module = program.module()
    if device != "cpu":
        module.to(device)
    meta = json.loads(extra[ARCHIVE_METADATA]) if extra[ARCHIVE_METADATA] else None
    first = next(iter(program.graph_signature.user_inputs), None)
    example = program.example_inputs[0][0] if program.example_inputs else None

    @torch.inference_mode()
    def run(batch: torch.Tensor) -> np.ndarray:
        if example is not None and (
            batch.ndim != example.ndim or batch.shape[1:] != example.shape[1:]
        ):
            raise CheckpointError(
                f"{path} takes inputs of shape [batch, {', '.join(map(str, example.shape[1:]))}]"
                f" ({first}), got {list(batch.shape)}: give the file's own --size"
            )
        try:
            return module(batch.to(device)).float().cpu().numpy()
        except Exception as err:  # a guard of the program, or a kernel, failed on this batch
            raise CheckpointError(f"{path}: the program failed on a batch ({err})") from None

    return run, meta


def load_runner(model, device: str, contract=None, recipe=None) -> tuple:
    """The runner of MODEL and its defaults: (batch size, workers, distance of its recipe's
    evaluation, the recipe; the last two None for an exported file).

    Args:
        model: a run folder, a checkpoint, an `.onnx` file or a TorchScript archive.
        device: auto, cpu or cuda.
        contract: anything with `size`, `mean` and `std` (all None, or the input contract of
            an exported file that carries no metadata, e.g. `EmbedOptions`).
        recipe: the recipe of a weights file that carries none.

    Raises:
        CheckpointError: MODEL does not exist or cannot be loaded.
        RecipeError: size/mean/std or recipe where they do not apply.
    """
    override = None
    if contract is not None and contract.size is not None:
        override = InputContract(tuple(contract.size), tuple(contract.mean), tuple(contract.std))
    path = Path(model)
    if not path.exists():
        raise CheckpointError(f"{path}: no such run folder, checkpoint or exported model")
    if not is_exported(path):
        if override is not None:
            raise RecipeError(
                "size/mean/std describe exported files without metadata; a checkpoint's "
                "preprocessing comes from its recipe"
            )
        runner, rec = load_checkpoint_runner(path, recipe, device)
        return runner, (rec.data.eval_batch_size, rec.data.workers, rec.eval.distance, rec)
    if recipe is not None:
        raise RecipeError("recipe applies to checkpoints; an exported file carries its metadata")
    defaults = (EXPORT_BATCH, min(EXPORT_WORKERS, os.cpu_count() or 1), None, None)
    return load_exported_runner(path, device, override), defaults
