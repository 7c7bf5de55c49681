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
