"""Write an `EmbeddingGraph` as ONNX (torch.onnx, dynamo first, legacy where needed), a
`torch.export` program archive (.pt2) or TorchScript (legacy: deprecated in PyTorch).

Exporter failures are turned into an `ExportError` that names the operator, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from reidcli.errors import ExportError

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "features"
EXPORTERS = ("auto", "dynamo", "legacy")
EXTRA_HINT = "pip install 'reidcli[export]'"
# The metadata document inside a TorchScript or .pt2 archive (an extra file of the archive).
ARCHIVE_METADATA = "reid_metadata.json"

# Where exporters name the operator they could not translate (dynamo, then legacy messages).
_OPERATOR_PATTERNS = (
    re.compile(r"op='([\w.]+)'"),
    re.compile(r"Unsupported FX nodes: \{'call_function': \['([^']+)'"),
    re.compile(r"target=torch\.ops\.([\w.]+)"),
    re.compile(r"[Ee]xport(?:ing)? (?:of )?(?:the )?operator '?([\w:.]+?)'?[ ,]"),
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class OnnxExport:
    """Which torch.onnx exporter wrote the file, with which opset, and why the first choice was
    given up (the dynamo exporter failed, or wrote another opset than the one asked for: it
    writes 18 or newer)."""

    exporter: str
    opset: int
    fallback_reason: str | None = None


def require_onnx() -> None:
    """Raises `ExportError` naming the `export` extra when onnx is not importable."""
    try:
        import onnx  # noqa: F401
    except ImportError as err:
        raise ExportError(f"ONNX export needs the onnx package ({err}): {EXTRA_HINT}") from None


def require_onnxruntime():
    """The onnxruntime module, or an `ExportError` naming the `export` extra."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ExportError(f"running ONNX models needs onnxruntime ({err}): {EXTRA_HINT}") from None
    return onnxruntime


def dynamo_available() -> bool:
    """torch.onnx's current (dynamo-based) exporter needs onnxscript."""
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(
    graph: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    opset: int,
    dynamic_batch: bool,
    exporter: str = "auto",
) -> OnnxExport:
    """Write `graph` to `path` as ONNX with one input `images` and one output `features`.

    Args:
        graph: the module to export (an `EmbeddingGraph`).
        example: an input of the contract's dtype and shape, batch > 1 when the batch is dynamic.
        path: the file to write (the caller renames it into place).
        opset: ONNX opset version.
        dynamic_batch: a symbolic batch dimension; otherwise the example's batch is fixed.
        exporter: "dynamo" (torch.export based), "legacy" (TorchScript based) or "auto" (dynamo,
            falling back to legacy when it fails or onnxscript is missing).

    Raises:
        ExportError: neither exporter can translate the model (the operator is named).
    """
    require_onnx()
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    reason = None
    if exporter in ("auto", "dynamo"):
        if not dynamo_available():
            reason = f"the dynamo exporter needs onnxscript ({EXTRA_HINT})"
            if exporter == "dynamo":
                raise ExportError(reason)
        else:
            try:
                _dynamo(graph, example, path, opset, dynamic_batch)
            except Exception as err:  # the exporter raises many kinds; all are reported
                reason = _describe(err)
                if exporter == "dynamo":
                    raise ExportError(
                        f"torch.onnx (dynamo) cannot export the model: {reason}"
                    ) from None
            else:
                written = _written_opset(path, opset)
                if written == opset:
                    return OnnxExport("dynamo", written)
                # It writes the opsets it implements (18 and newer) whatever was asked for.
                reason = f"the dynamo exporter wrote opset {written}, not the {opset} asked for"
                if exporter == "dynamo":
                    raise ExportError(
                        f"{reason}; ask for --opset {written} or use --exporter legacy"
                    )
        log.warning("dynamo exporter failed (%s); using the legacy exporter", reason)
    try:
        _legacy(graph, example, path, opset, dynamic_batch)
    except Exception as err:
        detail = _describe(err)
        first = f"; dynamo exporter: {reason}" if reason else ""
        raise ExportError(f"torch.onnx cannot export the model: {detail}{first}") from None
    return OnnxExport("legacy", _written_opset(path, opset), reason)


def _written_opset(path: Path, asked: int) -> int:
    """The default-domain opset the file declares (`asked` when it declares none)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), asked)
    return int(opset)


def _dynamo(graph, example, path: Path, opset: int, dynamic_batch: bool) -> None:
    shapes = {INPUT_NAME: {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
    with _quiet():
        program = torch.onnx.export(
            graph, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=opset, dynamo=True, dynamic_shapes=shapes, verbose=False,
        )  # fmt: skip
        program.save(str(path), external_data=False)


def _legacy(graph, example, path: Path, opset: int, dynamic_batch: bool) -> None:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with _quiet():
        torch.onnx.export(
            graph, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=opset, dynamo=False, dynamic_axes=axes, do_constant_folding=True,
        )  # fmt: skip


def trace_torchscript(graph: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace `graph` with `example` (the batch stays symbolic: sizes are traced as operations).

    Raises:
        ExportError: tracing failed (the operator is named when the tracer says which).
    """
    try:
        with _quiet(), torch.no_grad():
            return torch.jit.trace(graph, example, check_trace=False)
    except Exception as err:
        raise ExportError(f"torch.jit.trace cannot export the model: {_describe(err)}") from None


def save_torchscript(module: torch.jit.ScriptModule, path: Path, metadata: dict) -> None:
    """Save a traced module with `metadata` as the extra file `reid_metadata.json`."""
    with _quiet():
        module.save(str(path), _extra_files={ARCHIVE_METADATA: json.dumps(metadata)})


def export_program(graph: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """`graph` as a `torch.export` program with a dynamic batch dimension.

    The program keeps its example inputs in the archive, so `example` should be made-up data of
    the contract's shape and dtype, not the user's images.

    Raises:
        ExportError: torch.export cannot capture the model (the operator is named when it says).
    """
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet(), torch.no_grad():
            return torch.export.export(graph, (example,), dynamic_shapes={INPUT_NAME: {0: batch}})
    except Exception as err:  # torch.export raises many kinds; all are reported
        raise ExportError(f"torch.export cannot export the model: {_describe(err)}") from None


def save_program(program: torch.export.ExportedProgram, path: Path, metadata: dict) -> None:
    """Save a program archive with `metadata` as the extra file `reid_metadata.json`."""
    with _quiet():
        torch.export.save(program, str(path), extra_files={ARCHIVE_METADATA: json.dumps(metadata)})


def _describe(err: BaseException) -> str:
    """One line: the operator when a message names one, and the innermost error's first line."""
    chain = [err]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    texts = [_ANSI.sub("", str(e)) for e in chain]
    inner = chain[-1]
    first = next((line.strip() for line in texts[-1].splitlines() if line.strip()), "")
    first = f"{type(inner).__name__}: {first[:300]}{'...' if len(first) > 300 else ''}"
    for pattern in _OPERATOR_PATTERNS:
        for text in texts:
            match = pattern.search(text)
            if match:
                return f"operator {match.group(1)} is not supported ({first})"
    return first


@contextlib.contextmanager
def _quiet():
    """Keep exporter chatter out of the user's output through the exporters' own switches:
    their loggers at ERROR and their warnings ignored for the duration. Nothing of the
    process is touched (no file descriptor or global stream is redirected), so the caller's
    other threads print as usual; what torch's C++ code prints itself (the legacy exporter
    dumps its graph when it fails) still reaches the terminal."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
