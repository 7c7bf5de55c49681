"""Device names, checked in one place (no torch: the CLI validates before importing it)."""

import typing
from typing import Literal

from reidcli.errors import DeviceError

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = typing.get_args(Device)


def check_device(name: str) -> str:
    """Return `name` when it is a known device name.

    Raises:
        DeviceError: any other name.
    """
    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    return name


def emulated_precision_note(precision: str) -> str:
    """The one line said when autocast to `precision` (bf16, fp16) is emulated on this CPU."""
    hardware = "AVX-512 BF16 or AMX" if precision == "bf16" else "AVX-512 FP16 or AMX-FP16"
    return (
        f"{precision} is emulated on this CPU (no {hardware}): expect it to be several times "
        f"slower than fp32 here; amp: auto picks {precision} only where it is native"
    )
