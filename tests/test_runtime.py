"""`amp: auto`: bf16 only where the device computes it natively."""

import pytest
import torch

from reidcli.engine import runtime
from reidcli.engine.runtime import Runtime, resolve_amp
from reidcli.errors import DeviceError

CPU = torch.device("cpu")


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "off")])
def test_auto_on_the_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: native)
    assert resolve_amp("auto", CPU) == expected
    dtype = Runtime.from_env("cpu", "auto").amp_dtype
    assert dtype == (torch.bfloat16 if native else None)


def test_explicit_precisions_are_kept(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    assert [resolve_amp(a, CPU) for a in ("off", "bf16", "fp16")] == ["off", "bf16", "fp16"]
    assert Runtime.from_env("cpu", "bf16").amp_dtype == torch.bfloat16
    with pytest.raises(DeviceError, match="fp16 needs a CUDA device"):
        Runtime.from_env("cpu", "fp16")


def test_native_bf16_probe_answers():
    assert isinstance(runtime.cpu_has_fast_bf16(), bool)
