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
    fp16 = Runtime.from_env("cpu", "fp16")  # CPU autocast with a CPU loss scaler
    assert fp16.amp_dtype == torch.float16 and fp16.grad_scaler().is_enabled()
    assert not Runtime.from_env("cpu", "bf16").grad_scaler().is_enabled()


def test_native_bf16_probe_answers():
    assert isinstance(runtime.cpu_has_fast_bf16(), bool)


def test_sync_bn_on_cpu_ranks_is_refused_before_any_work():
    from reidcli.engine.setup import check_runtime_options
    from reidcli.recipe import load_recipe

    recipe = load_recipe(None, ["train.sync_bn=true"])
    two_cpu_ranks = Runtime(CPU, rank=0, world_size=2)
    with pytest.raises(DeviceError, match=r"train\.sync_bn: SyncBatchNorm works on CUDA devices"):
        check_runtime_options(recipe, two_cpu_ranks)
    check_runtime_options(recipe, Runtime(CPU))  # one process: nothing to synchronise
    check_runtime_options(load_recipe(None), two_cpu_ranks)
