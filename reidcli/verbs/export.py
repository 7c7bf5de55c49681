"""`reid export`: a checkpoint to ONNX, .pt2 or TorchScript files, checked against the model.

The formats and their options are the recipe's `export` section (`reidcli.recipe.run.Export`):
a new option is a field there, read here from `rec.export`.

Each file is written under a temporary name beside its destination, checked, given its metadata,
then renamed into place: a failed export or parity check leaves the destination as it was.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
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
    INPUT_NAME,
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

FORMATS = ("onnx", "openvino", "pt2", "torchscript")
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
    if {"onnx", "openvino"} & set(cfg.formats):
        require_onnx()  # OpenVINO converts the ONNX graph
        if (cfg.check or cfg.int8) and "onnx" in cfg.formats:
            require_onnxruntime()
    if "openvino" in cfg.formats:
        from reidcli.export.openvino import require_openvino

        require_openvino()
    paths = [_default_path(f, checkpoint, cfg.int8) if options.out is None else Path(options.out)
             for f in cfg.formats]  # fmt: skip
    for fmt, path in zip(cfg.formats, paths, strict=True):  # all checked before any is written
        if path.resolve() == checkpoint.resolve():
            raise RecipeError(f"out {path} is the checkpoint being exported; choose another file")
        if fmt == "openvino":
            from reidcli.export.openvino import check_output_folder

            check_output_folder(path)
        else:
            check_output_file(path, "exported model")
            check_output_file(sidecar_path(path), "metadata sidecar")
    job = _job(model.float().cpu().eval(), rec, checkpoint)
    if cfg.int8:  # read before anything is exported: bad calibration data fails at once
        job.calibration = _calibration_set(rec, job.contract)
    exports = [_export_one(fmt, path, job) for fmt, path in zip(cfg.formats, paths, strict=True)]
    return ExportResult(str(checkpoint), job.sha256, rec.model.name, tuple(exports))


def _default_path(fmt: str, checkpoint: Path, int8: bool = False) -> Path:
    """Beside the checkpoint: best.onnx (best-int8.onnx), best.pt2, best.torchscript,
    best_openvino_model/."""
    if int8:
        return checkpoint.with_name(f"{checkpoint.stem}-int8.onnx")
    if fmt == "openvino":
        from reidcli.export.openvino import folder_for

        return folder_for(checkpoint)
    return checkpoint.with_suffix(SUFFIXES[fmt])


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
    calibration: tuple | None = None  # int8: (images, description) of the calibration crops


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
    if fmt == "openvino":
        return _export_openvino(path, job)
    started = time.perf_counter()
    graph, example, inputs, float_pool = _graph(job)
    with atomic_path(path) as tmp:
        if fmt == "onnx":
            done = _onnx(graph, example, tmp, job)
            exporter, reason, opset = done.exporter, done.fallback_reason, done.opset
        elif fmt == "pt2":
            # The archive keeps its example inputs: made-up images, never the user's crops.
            program = export_program(graph, torch.zeros_like(example))
            save_program(program, tmp, {})
            exporter, reason, opset = "torch.export", None, None
        else:
            module = trace_torchscript(graph, example)
            save_torchscript(module, tmp, {})
            exporter, reason, opset = "torch.jit.trace", None, None
        meta = _metadata(fmt, job, exporter, opset)
        meta["parity"] = _checked(fmt, tmp, path, job, inputs, float_pool)
        if fmt == "onnx" and job.recipe.export.int8:
            meta = _quantized(tmp, path, job, meta)
        if fmt == "onnx":
            write_onnx_metadata(tmp, meta)
        elif fmt == "pt2":
            save_program(program, tmp, meta)
        else:
            save_torchscript(module, tmp, meta)
    sidecar = write_sidecar(path, meta)
    return _exported(fmt, path, sidecar, meta, reason, started)


def _export_openvino(folder: Path, job: ExportJob) -> ExportedFile:
    """ONNX first (in a temporary folder beside `folder`), converted to an OpenVINO IR folder,
    checked, then moved onto `folder`."""
    from reidcli.export.openvino import convert, ir_files, replace_folder

    started = time.perf_counter()
    graph, example, inputs, float_pool = _graph(job)
    work = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        done = _onnx(graph, example, work / "graph.onnx", job)
        exporter = f"{done.exporter} + openvino"
        meta = _metadata("openvino", job, exporter, done.opset)
        checked = work / "checked" / folder.name
        convert(work / "graph.onnx", checked, meta, job.fp16)
        meta["parity"] = _checked("openvino", checked, folder, job, inputs, float_pool)
        # Written again with the parity inside, to a new folder: the checked one's weights may
        # still be mapped by the runtime that ran the check.
        staged = work / folder.name
        convert(work / "graph.onnx", staged, meta, job.fp16)
        replace_folder(staged, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sidecar = ir_files(folder)[2]
    return _exported("openvino", folder, sidecar, meta, done.fallback_reason, started)


def _quantized(tmp: Path, path: Path, job: ExportJob, meta: dict) -> dict:
    """Replace the fp32 ONNX file at `tmp` by its INT8 version, if retrieval allows it.

    The fp32 file's parity with PyTorch moves into `int8.fp32_parity`; the file's own check is
    the retrieval comparison in `int8.retrieval`."""
    from reidcli.data.transforms import build_inference_transform
    from reidcli.export import int8

    cfg, contract = job.recipe.export, job.contract
    transform = build_inference_transform(contract.size, contract.mean, contract.std)
    images, calibration = job.calibration or _calibration_set(job.recipe, contract)
    quantized = tmp.with_name(f"{tmp.name}.int8")
    try:
        int8.quantize(tmp, quantized, images, INPUT_NAME)
        check = int8.retrieval_check(
            open_onnx(tmp)[0], open_onnx(quantized)[0], job.recipe, transform, cfg.max_map_drop
        )
        if not check["passed"]:
            raise int8.refuse(check, calibration, path)
        os.replace(quantized, tmp)
    finally:
        quantized.unlink(missing_ok=True)
    fp32_parity = meta.pop("parity")
    return {
        **meta,
        "precision": "int8",
        "parity": None,
        "int8": {
            "quantizer": "onnxruntime.quantization.quantize_static (QDQ, per-channel int8 "
            "weights, uint8 activations, min/max calibration)",
            "calibration": calibration,
            "retrieval": check,
            "fp32_parity": fp32_parity,
        },
        "onnxruntime_version": require_onnxruntime().__version__,
    }


def _calibration_set(recipe, contract: InputContract) -> tuple:
    from reidcli.data.transforms import build_inference_transform
    from reidcli.export import int8

    cfg = recipe.export
    transform = build_inference_transform(contract.size, contract.mean, contract.std)
    return int8.calibration_set(
        Path(cfg.calibrate), cfg.calibration_images, cfg.calibration_seed, transform
    )


def _graph(job: ExportJob):
    """The module to export, its example input, and the check's inputs (as fed, and float)."""
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
    return graph, example, inputs, float_pool


def _onnx(graph, example, path: Path, job: ExportJob):
    dynamic = job.contract.static_batch is None
    return export_onnx(
        graph, example, path, opset=job.opset, dynamic_batch=dynamic, exporter=job.exporter
    )


def _metadata(fmt: str, job: ExportJob, exporter: str, opset: int | None) -> dict:
    return build_metadata(
        fmt=fmt,
        recipe=job.recipe,
        contract=job.contract,
        embedding_dim=job.model.embedding_dim,
        branch_dims=job.model.branch_dims,
        exporter=exporter,
        opset=opset,
        fp16=job.fp16,
        checkpoint=job.checkpoint,
        checkpoint_sha256=job.sha256,
        versions=_versions(fmt),
    )


def _checked(fmt: str, tmp: Path, path: Path, job: ExportJob, inputs, float_pool) -> dict | None:
    """The parity report of the file at `tmp`; a failed check raises and writes nothing."""
    if not job.check:
        return None
    report = _parity(fmt, tmp, job, inputs, float_pool)
    if not report["passed"]:
        err = ParityError(failure_message(report) + f"; nothing written to {path}")
        err.report = ParityReport.from_document(report)
        raise err
    return report


def _exported(fmt, path: Path, sidecar: Path, meta: dict, reason, started: float) -> ExportedFile:
    parity = meta["parity"]
    quantized = meta.get("int8")
    return ExportedFile(
        format=fmt, path=str(path), metadata_path=str(sidecar), exporter=meta["exporter"],
        fallback_reason=reason, opset=meta["opset"], batch=meta["batch"],
        input_dtype=meta["input_dtype"], precision=meta["precision"],
        embedding_dim=meta["embedding_dim"],
        parity=ParityReport.from_document(parity) if parity is not None else None,
        seconds=round(time.perf_counter() - started, 2),
        retrieval=quantized["retrieval"] if quantized else None,
        calibration=quantized["calibration"] if quantized else None,
    )  # fmt: skip


def _parity(fmt: str, tmp: Path, job: ExportJob, inputs, float_pool) -> dict:
    """The file just written against the fp32 PyTorch model's `embed` on the same images."""
    if fmt == "openvino":
        from reidcli.export.openvino import open_openvino

        run, _ = open_openvino(tmp)
    else:
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
    if fmt in ("onnx", "openvino"):
        import onnx

        versions["onnx_version"] = onnx.__version__
    if fmt == "openvino":
        from reidcli.export.openvino import require_openvino

        versions["openvino_version"] = require_openvino().__version__
    return versions
