"""The speed gate on any CPU: speeds relative to the reference workload, compared across CPU
models; a doctored model (its convolutions computed four times) fails where the real one passes,
under three kernel sets standing in for other CPUs."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reidcli import api
from reidcli.verbs.bench.compare import best_of, compare_reports, resolve_tolerance

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "benchmarks" / "baselines" / "lmbn_n-quick-cpu.json"


def relative_report(speeds: dict[str, float], **env) -> dict:
    """A report with rows eval batch 1 fp32 / bf16 at the given relative speeds."""
    rows = []
    for precision, relative in speeds.items():
        rows.append({
            "mode": "eval", "batch": 1, "precision": precision, "channels_last": False,
            "cudnn_benchmark": None, "backend": "torch", "compile": False,
            "images_per_s": 10.0 * relative, "latency_ms": {"p50": 1, "p90": 1, "p99": 1},
            "peak_memory_mb": 1.0, "speedup": None, "iterations": 3, "error": None,
            "reference_images_per_s": 10.0, "relative_speed": relative,
        })  # fmt: skip
    return {
        "schema_version": 1, "model": "lmbn_n", "input": [384, 128], "flip": True,
        "params": 1, "params_without_classifier": 1, "gmacs": 1.0, "gflops": 2.0,
        "forward_gmacs": 0.5, "embedding_dim": 8, "settings": {"tolerance": None},
        "env": {"device": "cpu", "device_name": "AMD EPYC (cpu family 25, model 1)",
                "torch": "2.14.1", "cpu_capability": "AVX2", "threads": 2,
                "native_bf16": False, "native_fp16": False, **env},
        "results": rows,
    }  # fmt: skip


def test_relative_speeds_compare_across_cpu_models():
    baseline = relative_report({"fp32": 0.50, "bf16": 0.40})
    here = relative_report(
        {"fp32": 0.45, "bf16": 0.41}, device_name="Intel Xeon (cpu family 6, model 207)"
    )
    for row in here["results"]:
        row["images_per_s"] *= 3  # a faster CPU: absolute figures mean nothing across CPUs
    result = compare_reports(here, baseline, 25)
    assert result["timing_compared"] and result["compared_by"] == "relative_speed"
    assert result["passed"] and [round(r["change_pct"]) for r in result["rows"]] == [-10, 2]
    # half as fast relative to the reference: a regression on any CPU
    here["results"][0]["relative_speed"] = 0.25
    result = compare_reports(here, baseline, 25)
    assert not result["passed"] and "eval torch batch 1 fp32" in result["regressions"][0]


def test_autocast_rows_compare_only_where_both_cpus_compute_them_alike():
    baseline = relative_report({"fp32": 0.50, "bf16": 0.40})
    here = relative_report({"fp32": 0.50, "bf16": 0.05}, native_bf16=True)
    result = compare_reports(here, baseline, 25)
    assert result["passed"] and [r["row"] for r in result["rows"]] == ["eval torch batch 1 fp32"]
    assert result["rows_not_compared"] == [
        "eval torch batch 1 bf16: bf16 emulated in the baseline, native here"
    ]


def test_relative_gate_still_needs_the_same_kernel_set_threads_and_torch():
    baseline = relative_report({"fp32": 0.5})
    for key, value in [("cpu_capability", "AVX512"), ("threads", 8), ("torch", "2.15.0")]:
        result = compare_reports(relative_report({"fp32": 0.5}, **{key: value}), baseline, 25)
        assert not result["timing_compared"] and not result["rows"]
        assert key in " ".join(result["timing_not_compared_because"])


def test_images_per_s_where_one_report_has_no_reference():
    baseline = relative_report({"fp32": 0.5})
    for row in baseline["results"]:
        row["relative_speed"] = None
    result = compare_reports(relative_report({"fp32": 0.5}), baseline, 25)
    assert result["compared_by"] == "images_per_s" and result["timing_compared"]


def test_tolerance_is_the_callers_else_the_baselines_measured_one():
    baseline = relative_report({"fp32": 0.5})
    assert resolve_tolerance(None, baseline) == 25.0
    baseline["gate"] = {"tolerance_pct": 18.5}
    assert resolve_tolerance(None, baseline) == 18.5 and resolve_tolerance(40, baseline) == 40
    here = relative_report({"fp32": 0.4})  # -20 %: beyond the measured 18.5 %
    assert not api.compare_bench(here, baseline).passed
    assert api.compare_bench(here, baseline, tolerance=30).passed


def test_best_of_keeps_the_row_faster_relative_to_the_reference():
    slow, fast = relative_report({"fp32": 0.3}), relative_report({"fp32": 0.5})
    fast["results"][0]["images_per_s"] = 1.0  # a busier moment in absolute terms
    assert best_of(slow, fast)["results"][0]["relative_speed"] == 0.5


def test_committed_baseline_measures_relative_speed_with_a_measured_tolerance():
    baseline = json.loads(BASELINE.read_text())
    assert baseline["settings"]["reference"] and baseline["env"]["cpu_capability"] == "AVX2"
    timed = [r for r in baseline["results"] if r["images_per_s"] is not None]
    assert timed and all(r["relative_speed"] > 0 for r in timed)
    gate = baseline["gate"]
    # three times the measured spread, within [15, 40]: a model twice as slow (-50 %) fails
    expected = min(40.0, max(15.0, 3 * gate["largest_spread_pct"]))
    assert gate["tolerance_pct"] == pytest.approx(expected) and gate["tolerance_pct"] < 50
    assert gate["runs"] >= 3 and gate["busy_runs"] >= 1


# The gate measuring: real against doctored, under three kernel sets -------------------------

GATE_SCRIPT = r"""
import json, sys
import torch
from torch import nn
from reidcli import api
from reidcli.verbs.bench import steps
from reidcli.verbs.bench.compare import best_of

SETTINGS = {"model.name": "lmbn_n", "data.height": 128, "data.width": 64, "bench.batch": [2],
            "bench.warmup": 1, "bench.iters": 5, "bench.reference": True, "bench.threads": 1}
real_build = steps.build


def three_more(module, inputs, out):
    for _ in range(3):
        out = module._conv_forward(inputs[0], module.weight, module.bias)
    return out


def doctored(recipe):
    # the convolutions made 4x slower (each computed four times): the model about 2.5x slower.
    # (Computed twice, LMBN_n at this size is only about 1.4x slower, -29 %, inside the 40 %
    # the measured spread allows: BENCHMARKS.md.)
    model = real_build(recipe)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(three_more)
    return model


tolerance = float(sys.argv[1])
gate = {**SETTINGS, "bench.tolerance": tolerance}
# the baseline: the faster of two runs per row; each gate run measures again on a regression
# and keeps the faster run, as `make bench-gate` does
baseline = best_of(api.bench(overrides=SETTINGS).document, api.bench(overrides=SETTINGS).document)
_, real = api.bench_gate(None, baseline, overrides=gate)
steps.build = doctored
_, slower = api.bench_gate(None, baseline, overrides=gate)
print(json.dumps({
    "capability": baseline["env"]["cpu_capability"],
    "real": real.to_json(),
    "doctored": slower.to_json(),
}))
"""


@pytest.mark.serial
@pytest.mark.parametrize("capability", ["default", "avx2", "native"])
def test_gate_fails_a_doctored_model_and_passes_the_real_one(capability):
    tolerance = json.loads(BASELINE.read_text())["gate"]["tolerance_pct"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    done = subprocess.run(
        [sys.executable, "-c", GATE_SCRIPT, str(tolerance)],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if capability != "native":
        assert result["capability"] == capability.upper()
    real, doctored = result["real"], result["doctored"]
    assert real["compared_by"] == doctored["compared_by"] == "relative_speed"
    assert real["passed"], real["rows"]
    assert not doctored["passed"], doctored["rows"]
    # the doctored model is far slower relative to the reference than the tolerance allows
    assert doctored["rows"][0]["change_pct"] < -tolerance


def test_cli_gate_with_the_reference_prints_relative_speeds(tmp_path, capsys):
    from tests.test_export import run_cli

    out = tmp_path / "r.json"
    args = ["bench", "--model", "osnet_x0_25", "--input", "64x32", "--batch", "2",
            "--warmup", "0", "--iters", "2", "--reference"]  # fmt: skip
    code, _, stderr = run_cli(capsys, *args, "--out", str(out))
    assert code == 0, stderr
    assert "vs reference" in stderr and "mobilenet_v2" in stderr
    report = json.loads(out.read_text())
    assert report["results"][0]["relative_speed"] > 0
    doctored = copy.deepcopy(report)
    doctored["results"][0]["relative_speed"] *= 100  # the baseline was 100x faster relatively
    doctored["env"]["device_name"] = "another CPU model"
    path = tmp_path / "fast.json"
    path.write_text(json.dumps(doctored))
    code, _, stderr = run_cli(capsys, *args, "--compare", str(path))
    assert code == 1 and "relative to the reference" in stderr, stderr
