"""OpenVINO IR: an exported ONNX graph converted to `<name>_openvino_model/` (`.xml` + `.bin`).

The folder holds `<name>.xml` (the graph), `<name>.bin` (the weights) and
`<name>.xml.metadata.json` (the export metadata, also kept in the IR's `rt_info` under
`reid_metadata`). That is the layout trackers such as BoxMOT load: a folder whose name ends in
`_openvino_model`.

OpenVINO's CPU plugin computes in bf16 by default on CPUs that have it (AVX-512 BF16, AMX): an
fp32 file is compiled with the inference precision pinned to f32, so that it returns the
embedding the parity check measured on every CPU.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from reidcli import allocator
from reidcli.errors import CheckpointError, ExportError, OutputError
from reidcli.export.metadata import sidecar_path, write_sidecar

FOLDER_SUFFIX = "_openvino_model"
RT_INFO_KEY = "reid_metadata"
EXTRA_HINT = "pip install 'reidcli[openvino]'"


def require_openvino():
    """The openvino module, or an `ExportError` naming the `openvino` extra.

    glibc's allocator gets its default settings back first (`reidcli.allocator`): OpenVINO and
    `reid`'s retained-memory setting corrupted the heap together."""
    if "openvino" not in sys.modules:
        allocator.restore_defaults()
    try:
        import openvino
    except ImportError as err:
        raise ExportError(
            f"the OpenVINO format needs the openvino package ({err}): {EXTRA_HINT}"
        ) from None
    return openvino


def _model_name(path: Path, fallback: str) -> str:
    return path.name[: -len(FOLDER_SUFFIX)] if path.name.endswith(FOLDER_SUFFIX) else fallback


def folder_for(path: Path) -> Path:
    """The IR folder of an output name: `lmbn_n_market1501` -> `lmbn_n_market1501_openvino_model/`
    (an existing `..._openvino_model` name is kept)."""
    return path.with_name(f"{_model_name(path, path.stem)}{FOLDER_SUFFIX}")


def ir_files(folder: Path) -> tuple[Path, Path, Path]:
    """(xml, bin, metadata sidecar) of an IR folder."""
    xml = folder / f"{_model_name(folder, folder.name)}.xml"
    return xml, xml.with_suffix(".bin"), sidecar_path(xml)


def is_openvino(path: Path) -> bool:
    """An IR folder (`*_openvino_model/`) or an `.xml` file."""
    return (path.is_dir() and path.name.endswith(FOLDER_SUFFIX)) or (
        path.is_file() and path.suffix.lower() == ".xml"
    )


def check_output_folder(folder: Path) -> None:
    """`folder` may be written: absent, or a previous OpenVINO export (nothing else inside).

    Raises:
        OutputError: it is a file, or a folder holding files another program wrote.
    """
    if folder.is_file():
        raise OutputError(f"{folder}: is a file; the OpenVINO model is a folder")
    if folder.is_dir():
        own = {p.name for p in ir_files(folder)}
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in own)
        if foreign:
            raise OutputError(
                f"{folder}: holds files reid export did not write ({', '.join(foreign[:3])}); "
                "give another --out or move them"
            )


def convert(onnx_path: Path, folder: Path, metadata: dict, fp16: bool) -> None:
    """Convert an ONNX file into the IR folder `folder` (which must not exist yet)."""
    ov = require_openvino()
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as err:  # the converter raises its own exception types
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ExportError(f"OpenVINO cannot convert the ONNX graph: {first}") from None
    write_ir(model, folder, metadata, fp16)


def write_ir(model, folder: Path, metadata: dict, fp16: bool) -> None:
    """Save an `openvino.Model` with `metadata` in its rt_info and as the sidecar."""
    ov = require_openvino()
    xml = ir_files(folder)[0]
    folder.mkdir(parents=True, exist_ok=True)
    model.set_rt_info(json.dumps(metadata), RT_INFO_KEY)
    ov.save_model(model, str(xml), compress_to_fp16=fp16)
    write_sidecar(xml, metadata)


def replace_folder(tmp: Path, folder: Path) -> None:
    """Move the finished IR folder `tmp` onto `folder` (a previous export there is replaced)."""
    if folder.exists():
        check_output_folder(folder)
        shutil.rmtree(folder)
    tmp.rename(folder)


def open_openvino(path: Path, device: str = "cpu", threads: int | None = None):
    """An IR folder or `.xml` file as a batch -> features function, and its metadata.

    Raises:
        CheckpointError: the folder has no `.xml`/`.bin` pair, or OpenVINO cannot read it.
        ExportError: openvino is not installed, or a device other than the CPU is asked for.
    """
    ov = require_openvino()
    if device == "cuda":
        raise ExportError("--device cuda: OpenVINO runs on the CPU here (use the ONNX file)")
    xml = xml_of(path)
    weights = xml.with_suffix(".bin")
    if not weights.is_file():
        raise CheckpointError(f"{path}: {weights.name} is missing beside {xml.name}")
    core = ov.Core()
    # Weights are read into memory, not mapped from the .bin: a file replaced while a model
    # runs (a new export over the folder) must not change the numbers or crash the process.
    core.set_property({"ENABLE_MMAP": False})
    try:
        model = core.read_model(str(xml))
    except Exception as err:  # OpenVINO raises its own exception types
        raise CheckpointError(f"{xml}: OpenVINO cannot read it ({_first_line(err)})") from None
    meta = None
    if model.has_rt_info(RT_INFO_KEY):
        meta = json.loads(model.get_rt_info(RT_INFO_KEY).astype(str))
    config: dict = {"INFERENCE_PRECISION_HINT": "f32"}  # never bf16 behind the caller's back
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = core.compile_model(model, "CPU", config)
    except Exception as err:
        raise CheckpointError(f"{xml}: OpenVINO cannot compile it ({_first_line(err)})") from None
    shape = compiled.input(0).get_partial_shape()
    request = compiled.create_infer_request()

    def run(batch: torch.Tensor) -> np.ndarray:
        if not shape.compatible(ov.PartialShape(list(batch.shape))):
            raise CheckpointError(
                f"{xml} takes inputs of shape {shape}, got {list(batch.shape)}: give the file's "
                "own --size (and --batch for a fixed batch)"
            )
        try:
            out = request.infer({0: batch.numpy()})
        except Exception as err:
            message = f"{xml}: OpenVINO failed on a batch ({_first_line(err)})"
            raise CheckpointError(message) from None
        return np.asarray(out[compiled.output(0)], dtype=np.float32)

    return run, meta


def xml_of(path: Path) -> Path:
    """The `.xml` file of an IR folder (or the file itself)."""
    return path if path.is_file() else _find_xml(path)


def _find_xml(folder: Path) -> Path:
    expected = ir_files(folder)[0]
    if expected.is_file():
        return expected
    found = sorted(folder.glob("*.xml"))
    if len(found) != 1:
        what = "no .xml file" if not found else f"{len(found)} .xml files"
        raise CheckpointError(f"{folder}: {what}; an OpenVINO model folder holds one .xml + .bin")
    return found[0]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
