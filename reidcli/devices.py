"""Device names, checked in one place (no torch: the CLI validates before importing it)."""

from reidcli.errors import DeviceError

DEVICES = ("auto", "cpu", "cuda")


def check_device(name: str) -> str:
    """Return `name` when it is a known device name.

    Raises:
        DeviceError: any other name.
    """
    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    return name
