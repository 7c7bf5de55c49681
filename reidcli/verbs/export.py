"""`reid export`: a checkpoint to ONNX, .pt2 or TorchScript files, checked against the model.

The formats and their options are the recipe's `export` section (`reidcli.recipe.run.Export`):
a new option is a field there, read here from `rec.export`.

Each file is written under a temporary name beside its destination, checked, given its metadata,
then renamed into place: a failed export or parity check leaves the destination as it was.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from reidcli import __version__
from reidcli.errors import DatasetError, ParityError, RecipeError
from reidcli.export.graph import EmbeddingGraph
from reidcli.export.metadata import (
    InputContract,
    build_metadata,
    file_sha256,
    sidecar_path,
    write_onnx_metadata,
    write_sidecar,
)
from reidcli.export.parity import check_parity, failure_message
from reidcli.export.writers import (
    export_onnx,
    export_program,
    require_onnx,
    require_onnxruntime,
    save_program,
    save_torchscript,
    trace_torchscript,
)
from reidcli.inference.runners import open_onnx, open_program, open_torchscript
from reidcli.outputs import atomic_path, check_output_file
from reidcli.recipe.options import ExportOptions
from reidcli.results import ExportedFile, ExportResult, ParityReport

log = logging.getLogger(__name__)

FORMATS = ("onnx", "pt2", "torchscript")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript"}
OPENERS = {"onnx": open_onnx, "pt2": open_program, "torchscript": open_torchscript}
TRACE_BATCH = 2  # dynamic-batch graphs are traced at 2 and checked at 1 and 7
CHECK_BATCHES = (1, 7)


def export(target, options: ExportOptions, overrides: list[str]) -> ExportResult:
    """See `reidcli.api.export`."""
    from reidcli.inference.checkpoints import find_checkpoint, load_trained_model

    checkpoint = find_checkpoint(target, options.runs_dir)
    model, trained = load_trained_model(checkpoint, options.recipe)
    rec = _with_overrides(trained, overrides, checkpoint)
    cfg = rec.export
    if options.out is not None and len(cfg.formats) > 1:
        raise RecipeError("out names one file: export one format at a time")
    if not 11 <= cfg.opset <= max_opset():
        raise RecipeError(
            f"opset must be in 11..{max_opset()} (torch.onnx's range), got {cfg.opset}"
        )
    if "onnx" in cfg.formats:
        require_onnx()
        if cfg.check:
            require_onnxruntime()
    paths = [Path(options.out) if options.out is not None else checkpoint.with_suffix(SUFFIXES[f])
             for f in cfg.formats]  # fmt: skip
    for path in paths:  # every output is checked before any is written
        if path.resolve() == checkpoint.resolve():
            raise RecipeError(f"out {path} is the checkpoint being exported; choose another file")
        check_output_file(path, "exported model")
        check_output_file(sidecar_path(path), "metadata sidecar")
    job = _job(model.float().cpu().eval(), rec, checkpoint)
    exports = [_export_one(fmt, path, job) for fmt, path in zip(cfg.formats, paths, strict=True)]
    return ExportResult(str(checkpoint), job.sha256, rec.model.name, tuple(exports))


def _with_overrides(trained, overrides: list[str], checkpoint):
    """The checkpoint's recipe with `export.*` and `eval.*` overrides (nothing else changes
    the file an export describes)."""
    from reidcli.recipe import override_recipe

    recipe = override_recipe(trained, overrides, source=f"{checkpoint} recipe + --set")
    changed = [
        name for name in type(recipe).model_fields
        if name not in ("export", "eval") and getattr(recipe, name) != getattr(trained, name)
    ]  # fmt: skip
    if changed:
        raise RecipeError(
            f"{', '.join(changed)} cannot change when exporting a trained model; export.* and "
            "eval.* can"
        )
    return recipe


def _job(model, rec, checkpoint: Path) -> ExportJob:
    cfg, data = rec.export, rec.data
    size = (data.height, data.width)
    contract = InputContract(size, data.mean, data.std, cfg.include_preprocessing, cfg.static_batch)
    pool, sources, inputs_from = sample_images(
        rec, size, max(*CHECK_BATCHES, cfg.static_batch or 1)
    )
    atol, min_cos = cfg.tolerance()
    return ExportJob(
        model=model, recipe=rec, contract=contract, checkpoint=checkpoint,
        sha256=file_sha256(checkpoint), opset=cfg.opset, fp16=cfg.fp16, check=cfg.check,
        atol=atol, min_cos=min_cos, exporter=cfg.exporter, pool=pool, sources=sources,
        inputs_from=inputs_from,
    )  # fmt: skip


@dataclass
class ExportJob:
    """Everything the formats of one export share: the model, its contract, the check."""

    model: torch.nn.Module
    recipe: object
    contract: InputContract
    checkpoint: Path
    sha256: str
    opset: int
    fp16: bool
    check: bool
    atol: float
    min_cos: float
    exporter: str
    pool: torch.Tensor  # (N, 3, H, W) uint8 crops for tracing and the parity check
    sources: list[str]
    inputs_from: str
    reference: np.ndarray | None = None  # (N, D) fp32 embedding of the pool, computed once


def max_opset() -> int:
    """The newest ONNX opset torch.onnx writes (and the installed onnx knows)."""
    from torch.onnx import _constants

    newest = getattr(_constants, "ONNX_MAX_OPSET", 18)
    try:
        import onnx

        return min(newest, onnx.defs.onnx_opset_version())
    except ImportError:
        return newest


def sample_images(recipe, size: tuple[int, int], count: int):
    """`count` uint8 (3, H, W) crops resized as evaluation does, and what they are.

    Real crops from the recipe's prepared dataset (query and gallery, evenly spaced) when it is
    there; seeded random images otherwise.

    Returns:
        (count, 3, H, W) uint8 tensor, a source name per image, and a description.
    """
    from reidcli.data.dataset import load_image
    from reidcli.data.manifest import load_manifest
    from reidcli.data.transforms import build_inference_transform

    try:
        frame = load_manifest(recipe.data.root, recipe.data.manifest)
    except DatasetError as err:
        log.info("parity on synthetic images: %s", err)
        frame = None
    if frame is not None and len(frame):
        test = frame[frame["split"].isin(["query", "gallery"])]
        frame = test if len(test) else frame
        rows = np.linspace(0, len(frame) - 1, count).round().astype(int)
        paths = [str(p) for p in frame["path"].to_numpy()[rows]]
        resize = build_inference_transform(size, (0, 0, 0), (1, 1, 1), normalise=False)
        images = torch.stack([resize(load_image(p)) for p in paths])
        return images, paths, f"{len(set(paths))} crops from {recipe.data.root}"
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, *size), generator=generator, dtype=torch.uint8)
    note = f"synthetic images (no prepared dataset at {recipe.data.root})"
    return images, [f"synthetic #{i}" for i in range(count)], note


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 scaled and normalised, as the evaluation transform does."""
    return TF.normalize(TF.to_dtype(images, torch.float32, scale=True), list(mean), list(std))


def _export_one(fmt: str, path: Path, job: ExportJob) -> ExportedFile:
    """Export one format to `path` through a temporary file; returns what was written."""
    started = time.perf_counter()
    contract, rec = job.contract, job.recipe
    float_pool = normalise(job.pool, contract.mean, contract.std)
    inputs = job.pool if contract.in_graph else float_pool
    # fp16 converts the model in place: give the graph its own copy.
    graph = EmbeddingGraph(
        copy.deepcopy(job.model) if job.fp16 else job.model,
        flip=rec.eval.flip,
        normalize=rec.eval.normalize,
        mean=contract.mean,
        std=contract.std,
        uint8_input=contract.in_graph,
        fp16=job.fp16,
    )
    example = inputs[: contract.static_batch or TRACE_BATCH].clone()
    with atomic_path(path) as tmp:
        if fmt == "onnx":
            dynamic = contract.static_batch is None
            done = export_onnx(
                graph, example, tmp, opset=job.opset, dynamic_batch=dynamic, exporter=job.exporter
            )
            exporter, reason, opset = done.exporter, done.fallback_reason, done.opset
        elif fmt == "pt2":
            # The archive keeps its example inputs: made-up images, never the user's crops.
            made_up = torch.zeros_like(example)
            program = export_program(graph, made_up)
            save_program(program, tmp, {})
            exporter, reason, opset = "torch.export", None, None
        else:
            module = trace_torchscript(graph, example)
            save_torchscript(module, tmp, {})
            exporter, reason, opset = "torch.jit.trace", None, None
        meta = build_metadata(
            fmt=fmt,
            recipe=rec,
            contract=contract,
            embedding_dim=job.model.embedding_dim,
            branch_dims=job.model.branch_dims,
            exporter=exporter,
            opset=opset,
            fp16=job.fp16,
            checkpoint=job.checkpoint,
            checkpoint_sha256=job.sha256,
            versions=_versions(fmt),
        )
        meta["parity"] = _parity(fmt, tmp, job, inputs, float_pool) if job.check else None
        if meta["parity"] is not None and not meta["parity"]["passed"]:
            err = ParityError(failure_message(meta["parity"]) + f"; nothing written to {path}")
            err.report = ParityReport.from_document(meta["parity"])
            raise err
        if fmt == "onnx":
            write_onnx_metadata(tmp, meta)
        elif fmt == "pt2":
            save_program(program, tmp, meta)
        else:
            save_torchscript(module, tmp, meta)
    sidecar = write_sidecar(path, meta)
    parity = meta["parity"]
    return ExportedFile(
        format=fmt, path=str(path), metadata_path=str(sidecar), exporter=exporter,
        fallback_reason=reason, opset=opset, batch=meta["batch"], input_dtype=meta["input_dtype"],
        precision=meta["precision"], embedding_dim=meta["embedding_dim"],
        parity=ParityReport.from_document(parity) if parity is not None else None,
        seconds=round(time.perf_counter() - started, 2),
    )  # fmt: skip


def _parity(fmt: str, tmp: Path, job: ExportJob, inputs, float_pool) -> dict:
    """The file just written against the fp32 PyTorch model's `embed` on the same images."""
    run, _ = OPENERS[fmt](tmp)
    if job.reference is None:
        flip, how = job.recipe.eval.flip, job.recipe.eval.normalize
        with torch.no_grad():
            job.reference = job.model.embed(float_pool, flip=flip, normalize=how).numpy()
    batches = (job.contract.static_batch,) if job.contract.static_batch else CHECK_BATCHES
    report = check_parity(run, job.reference, inputs, job.sources, batches, job.atol, job.min_cos)
    report["inputs"] = job.inputs_from
    return report


def _versions(fmt: str) -> dict[str, str]:
    versions = {"reid_version": __version__, "torch_version": torch.__version__}
    if fmt == "onnx":
        import onnx

        versions["onnx_version"] = onnx.__version__
    return versions
