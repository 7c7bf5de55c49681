"""What a bench report says about the machine (torch is imported only by `environment`)."""

from __future__ import annotations

import importlib
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from reidcli import __version__, allocator

if TYPE_CHECKING:
    import torch


def cpu_name() -> str:
    """The CPU model as the kernel names it, with its family and model numbers (virtual machines
    often hide the name: `AMD EPYC (family 25, model 1)`); else what `platform` knows."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if not key and fields:
                break  # the first processor's block is enough
            fields.setdefault(key, value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    numbers = ", ".join(f"{k} {fields[k]}" for k in ("cpu family", "model") if k in fields)
    return f"{fields['model name']} ({numbers})" if numbers else fields["model name"]


def environment(device: torch.device, backends: list[str]) -> dict:
    """Versions, device and threading: what decides whether two reports' timings compare."""
    import torch

    cuda = device.type == "cuda"
    env = {
        "torch": torch.__version__,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
        "allocator": allocator.current(),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": sys.version.split()[0],
        "reid": __version__,
        "platform": platform.platform(),
    }
    if not cuda:
        # Whether autocast rows run in hardware here or are emulated (see `precision_note`).
        env["native_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        env["native_fp16"] = bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    for backend in ("onnxruntime", "openvino"):
        if any(b.split("-")[0] == backend for b in backends):
            try:
                env[backend] = importlib.import_module(backend).__version__
            except ImportError:
                env[backend] = None
    return env
