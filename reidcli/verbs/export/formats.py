"""Each format of `reid export` written, checked and described: ONNX (fp32, fp16, INT8), the
OpenVINO folder, the `.pt2` program and TorchScript, each through a temporary path."""

from __future__ import annotations

import copy
import os
import shutil
import time
from pathlib import Path

import torch

from reidcli import __version__
from reidcli.errors import ParityError
from reidcli.export.graph import EmbeddingGraph
from reidcli.export.metadata import (
    InputContract,
    build_metadata,
    write_onnx_metadata,
    write_sidecar,
)
from reidcli.export.parity import check_parity, failure_message
from reidcli.export.writers import (
    INPUT_NAME,
    export_onnx,
    export_program,
    require_onnxruntime,
    save_program,
    save_torchscript,
    trace_torchscript,
)
from reidcli.inference.runners import open_onnx, open_program, open_torchscript
from reidcli.outputs import atomic_path
from reidcli.results import ExportedFile, ParityReport
from reidcli.verbs.export.job import (
    CHECK_BATCHES,
    TRACE_BATCH,
    ExportJob,
    normalise,
)

FORMATS = ("onnx", "openvino", "pt2", "torchscript")


SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript"}


OPENERS = {"onnx": open_onnx, "pt2": open_program, "torchscript": open_torchscript}


def export_one(fmt: str, path: Path, job: ExportJob) -> ExportedFile:
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
        if job.recipe.export.int8:
            meta = _quantized_openvino(work, folder, job, meta, inputs, float_pool)
            replace_folder(work / folder.name, folder)
            sidecar = ir_files(folder)[2]
            return _exported("openvino", folder, sidecar, meta, done.fallback_reason, started)
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


def _quantized_openvino(work: Path, folder: Path, job: ExportJob, meta: dict, inputs, pool):
    """The fp32 ONNX graph in `work` quantized (QDQ) and converted to an IR folder staged at
    `work/<folder name>`, if retrieval allows it: the check runs the IR under OpenVINO, which
    computes the quantized layers in int8."""
    from reidcli.export.openvino import convert, open_openvino

    graph = work / "graph.onnx"
    meta["parity"] = _checked("onnx", graph, folder, job, inputs, pool)  # the fp32 graph
    quantized = work / "graph-int8.onnx"
    meta = _int8_meta(meta, job, lambda: _quantize_checked(
        graph, quantized, folder, job,
        lambda: _ir_runner(convert, open_openvino, quantized, work / "checked" / folder.name),
    ))  # fmt: skip
    meta["openvino_precision"] = "int8 (quantized layers), f32 elsewhere"
    convert(quantized, work / folder.name, meta, False)
    return meta


def _ir_runner(convert, open_openvino, onnx_file: Path, folder: Path):
    convert(onnx_file, folder, {}, False)
    return open_openvino(folder)[0]


def _quantize_checked(fp32: Path, out: Path, path: Path, job: ExportJob, int8_runner) -> tuple:
    """Quantize `fp32` into `out` and compare retrieval (fp32 under ONNX Runtime against
    `int8_runner()`); (check, calibration), or ParityError when the drop is too large."""
    from reidcli.data.transforms import build_inference_transform
    from reidcli.export import int8

    cfg, contract = job.recipe.export, job.contract
    transform = build_inference_transform(contract.size, contract.mean, contract.std)
    images, calibration = job.calibration  # read by `export` before anything was written
    int8.quantize(fp32, out, images, INPUT_NAME)
    check = int8.retrieval_check(
        open_onnx(fp32)[0], int8_runner(), job.recipe, transform, cfg.max_map_drop
    )
    if not check["passed"]:
        raise int8.refuse(check, calibration, path)
    return check, calibration


def _int8_meta(meta: dict, job: ExportJob, quantize_and_check) -> dict:
    check, calibration = quantize_and_check()
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


def _quantized(tmp: Path, path: Path, job: ExportJob, meta: dict) -> dict:
    """Replace the fp32 ONNX file at `tmp` by its INT8 version, if retrieval allows it.

    The fp32 file's parity with PyTorch moves into `int8.fp32_parity`; the file's own check is
    the retrieval comparison in `int8.retrieval`."""
    quantized = tmp.with_name(f"{tmp.name}.int8")
    try:
        meta = _int8_meta(meta, job, lambda: _quantize_checked(
            tmp, quantized, path, job, lambda: open_onnx(quantized)[0]
        ))  # fmt: skip
        os.replace(quantized, tmp)
    finally:
        quantized.unlink(missing_ok=True)
    return meta


def calibration_set(recipe, contract: InputContract) -> tuple:
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
    """The file's metadata; the run's calibration goes in with it, except into an INT8 file
    (its distances are not the model's: calibrate the INT8 file's features)."""
    meta = build_metadata(
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
    if job.match_calibration is not None and not (fmt == "onnx" and job.recipe.export.int8):
        meta["calibration"] = job.match_calibration
    return meta


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
