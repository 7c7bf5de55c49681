"""What a bench report says about the machine, and peak memory per row."""

from __future__ import annotations

import contextlib
import platform
import resource
import sys
from pathlib import Path

import torch

from reidcli import __version__

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


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
    cuda = device.type == "cuda"
    env = {
        "torch": torch.__version__,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": sys.version.split()[0],
        "reid": __version__,
        "platform": platform.platform(),
    }
    if "onnxruntime" in backends:
        try:
            import onnxruntime

            env["onnxruntime"] = onnxruntime.__version__
        except ImportError:
            env["onnxruntime"] = None
    return env


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or the process's resident-set high-water
    mark on Linux (writing 5 to /proc/self/clear_refs resets VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # not Linux: peak_memory_mb gives the lifetime peak
        _CLEAR_REFS.write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    """MiB: CUDA max allocated since the reset, or the process's peak resident set on the CPU
    (since the reset on Linux, over the process's life elsewhere)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else kB
