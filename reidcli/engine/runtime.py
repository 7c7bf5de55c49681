"""Where and how a run executes: device, distributed ranks, autocast, seeds (set up once)."""

import contextlib
import logging
import os
import random
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from reidcli.devices import check_device, emulated_precision_note
from reidcli.errors import DeviceError

log = logging.getLogger(__name__)

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Runtime:
    """Device, ranks and precision for one process of a run."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints and logs and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(
        cls,
        device: str = "auto",
        amp: str = "off",
        channels_last: bool = False,
        seed: int = 0,
        deterministic: bool = False,
    ) -> "Runtime":
        """Set up the process: ranks from torchrun's environment, device, seeds, kernels.

        Args:
            device: auto (CUDA when available), cpu or cuda.
            amp: off, bf16, fp16 (with a loss scaler) or auto (see `resolve_amp`). On a CPU
                without native bf16 or fp16 arithmetic (AVX-512 BF16/FP16, AMX) both are
                emulated and slower than fp32.
            channels_last: use the NHWC memory format for images and the model.
            seed: base seed; each rank adds its rank so augmentations differ across ranks.
            deterministic: deterministic kernels (slower) so that runs and resumes are exact.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device, local_rank)
        if dev.type == "cuda":
            torch.cuda.set_device(local_rank)
        amp = resolve_amp(amp, dev)
        if dev.type == "cpu" and amp != "off" and not cpu_has_native(amp) and rank == 0:
            log.warning(emulated_precision_note(amp))
        if world_size > 1 and not dist.is_initialized():
            init_process_group("nccl" if dev.type == "cuda" else "gloo")
        seed_everything(seed + rank)
        set_deterministic(deterministic)
        return cls(dev, rank, world_size, local_rank, AMP_DTYPES[amp], channels_last)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The one autocast context of the run (a no-op when amp is off)."""
        enabled = self.amp_dtype is not None
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=enabled)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, active only for fp16 (bf16 has fp32's exponent range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        """Move a (B, 3, H, W) image batch to the device in the run's memory format."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return images.to(self.device, non_blocking=True, memory_format=fmt)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_process_group(backend: str) -> None:
    """The default process group, from the environment torchrun sets (MASTER_ADDR, RANK, ...).

    Its store keys are prefixed by torchrun's restart count. When `torchrun --max-restarts`
    restarts the group, the new processes share the agent's store with the previous attempt,
    whose keys (the old ranks' addresses) are still there: without the prefix, gloo connects to
    processes that are gone and fails ("connectFullMesh failed ... Connection refused").
    """
    store, rank, world_size = next(dist.rendezvous("env://"))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.PrefixStore(f"reid/attempt_{attempt}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)


def resolve_device(name: str, index: int = 0) -> torch.device:
    """The torch device of a device name: auto (CUDA when available), cpu or cuda (`index`).

    Raises:
        DeviceError: an unknown name, or cuda on a machine without a CUDA device.
    """
    if check_device(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device cuda was asked for, but no CUDA device is available")
    return torch.device("cuda", index) if name == "cuda" else torch.device("cpu")


def resolve_amp(amp: str, device: torch.device) -> str:
    """The precision `amp: auto` means on `device`; other values are returned as they are.

    auto is bf16 where the device computes it natively (a CPU with AVX-512 BF16 or AMX, as
    oneDNN reports it; a CUDA device with bf16), fp16 on CUDA devices without bf16, and off on
    other CPUs, where emulated bf16 is several times slower than fp32.
    """
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "off"


def cpu_has_native(precision: str) -> bool:
    """Whether oneDNN computes `precision` (bf16 or fp16) in hardware on this CPU."""
    if precision == "bf16":
        return cpu_has_fast_bf16()
    return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions and matrix products in hardware on this CPU."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Choose between deterministic kernels and cuDNN's autotuner."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def rng_state() -> dict:
    """Every RNG state of this process, as types `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or the process's resident-set high-water
    mark on Linux (writing 5 to /proc/self/clear_refs resets VmHWM)."""
    if device.type == "cuda":
        # Before CUDA's first allocation there is no peak to reset, and resetting one raises
        # "Invalid device argument".
        if torch.cuda.is_initialized():
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
