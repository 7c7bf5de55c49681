"""`reid bench`: the report's schema, sizes against SPEC §4, the settings side by side, rows that
fail, and the regression gate against doctored baselines."""

import copy
import json

import pytest
import torch

from reidcli import api
from reidcli.errors import BenchError, RecipeError
from reidcli.recipe import load_recipe, validate_recipe
from reidcli.verbs.bench import measure, steps
from reidcli.verbs.bench.compare import best_of, compare_reports
from tests.test_export import run_cli

# A tiny model and input: the speed numbers are meaningless, the structure is not.
TINY = {"model.name": "osnet_x0_25", "data.height": 64, "data.width": 32, "bench.warmup": 0,
        "bench.iters": 2}  # fmt: skip

# The documented JSON document (issue's schema), written out independently of the code.
NUMBER = (int, float)
SCHEMA = {
    "schema_version": int, "model": str, "params": int, "params_without_classifier": int,
    "gmacs": NUMBER, "gflops": NUMBER, "embedding_dim": int, "input": list,
    "env": {"torch": str, "device": str, "device_name": str, "cpu_capability": str,
            "threads": int, "cuda": (str, type(None)), "cudnn": (int, type(None))},
}  # fmt: skip
ROW_SCHEMA = {
    "mode": str, "batch": int, "precision": str, "channels_last": bool,
    "cudnn_benchmark": (bool, type(None)), "backend": str, "images_per_s": (*NUMBER, type(None)),
    "latency_ms": (dict, type(None)), "peak_memory_mb": (*NUMBER, type(None)),
    "error": (str, type(None)),
}  # fmt: skip


def check_schema(doc: dict, schema: dict, where: str = "") -> None:
    for key, kind in schema.items():
        assert key in doc, f"{where}{key} missing"
        if isinstance(kind, dict):
            check_schema(doc[key], kind, f"{where}{key}.")
        else:
            assert isinstance(doc[key], kind), f"{where}{key}: {doc[key]!r}"


def check_report(report: dict) -> None:
    check_schema(report, SCHEMA)
    assert report["results"], "no rows"
    for row in report["results"]:
        check_schema(row, ROW_SCHEMA, "results[].")
        if row["error"] is None:
            lat = row["latency_ms"]
            assert set(lat) == {"p50", "p90", "p99"}
            assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
            # images/s is the batch over the median iteration
            assert row["images_per_s"] == pytest.approx(row["batch"] / lat["p50"] * 1e3)
            assert row["peak_memory_mb"] > 0
        else:
            assert row["images_per_s"] is None and row["latency_ms"] is None


@pytest.fixture(scope="module")
def tiny_report() -> dict:
    return api.bench(overrides={**TINY, "bench.batch": [1, 2], "bench.amp": True}).to_json()


def test_lmbn_n_size_matches_spec_and_amp_rows_appear():
    report = api.bench(
        model="lmbn_n", overrides={"bench.batch": [1], "bench.iters": 1, "bench.warmup": 0,
                                   "bench.amp": True},
    ).to_json()  # fmt: skip
    check_report(report)
    # SPEC §4: 9,152,280 with 751-class heads, 6,460,696 without; 2.43 GMac a 384x128 pass
    assert report["params"] == 9_152_280
    assert report["params_without_classifier"] == 6_460_696
    assert report["params_trainable"] < report["params"]  # the BNNecks' frozen biases
    assert report["forward_gmacs"] == pytest.approx(2.43, abs=0.005)
    # flip TTA: the embedding runs two passes per image
    assert report["flip"] and report["gmacs"] == pytest.approx(2 * report["forward_gmacs"])
    assert report["gflops"] == pytest.approx(2 * report["gmacs"])
    assert report["embedding_dim"] == 3584 and report["input"] == [384, 128]
    precisions = {r["precision"]: r for r in report["results"]}
    assert set(precisions) == {"fp32", "bf16"}  # --amp on the CPU: bf16 beside fp32
    assert all(r["error"] is None for r in report["results"])
    assert precisions["fp32"]["speedup"] == pytest.approx(1.0)
    bf16 = precisions["bf16"]
    assert bf16["speedup"] == pytest.approx(
        bf16["images_per_s"] / precisions["fp32"]["images_per_s"]
    )


@pytest.mark.parametrize(
    ("name", "params", "gmacs"),
    [("osnet_x1_0", 2_169_508, 0.9789), ("osnet_x0_25", 201_864, 0.0823)],
)
def test_osnet_size_matches_spec(name, params, gmacs):
    # SPEC §4: unique parameters without classifier and mult-adds at 256x128
    recipe = load_recipe(None, [f"model.name={name}", "data.height=256", "data.width=128",
                                "eval.flip=false"])  # fmt: skip
    size = measure.model_size(recipe)
    # the catalog model is the backbone plus a BNNeck (a 512-wide BatchNorm1d: weight and bias)
    assert size["params_without_classifier"] == params + 2 * 512
    assert size["forward_gmacs"] == pytest.approx(gmacs, abs=5e-4)
    assert size["gmacs"] == size["forward_gmacs"]  # no flip: one pass
    assert size["embedding_dim"] == 512


def test_tiny_report_structure(tiny_report):
    check_report(tiny_report)
    rows = [(r["batch"], r["precision"]) for r in tiny_report["results"]]
    assert rows == [(1, "fp32"), (1, "bf16"), (2, "fp32"), (2, "bf16")]
    assert all(r["cudnn_benchmark"] is None for r in tiny_report["results"])  # CPU
    assert tiny_report["settings"]["iters"] == 2 and tiny_report["settings"]["warmup"] == 0
    assert all(r["iterations"] == 2 for r in tiny_report["results"])


def test_side_by_side_layouts_cudnn_backends_and_train(monkeypatch):
    report = api.bench(
        overrides={**TINY, "bench.batch": [2], "bench.channels_last": True,
                   "bench.cudnn_benchmark": True, "bench.mode": "both",
                   "bench.backend": ["torch", "torchscript", "onnxruntime"],
                   "data.p": 2, "data.k": 2, "train.grad_accum": 2},
    ).to_json()  # fmt: skip
    check_report(report)
    rows = report["results"]
    timed = {(r["mode"], r["backend"], r["channels_last"]) for r in rows if r["error"] is None}
    assert timed == {
        ("eval", "torch", False), ("eval", "torch", True), ("eval", "torchscript", False),
        ("eval", "torchscript", True), ("eval", "onnxruntime", False), ("train", "torch", False),
        ("train", "torch", True),
    }  # fmt: skip
    # cudnn.benchmark on the CPU: a row that says so instead of failing
    cudnn = [r for r in rows if r["cudnn_benchmark"]]
    assert len(cudnn) == len(rows) / 2
    assert all(r["error"].startswith("not applicable: cuDNN") for r in cudnn)
    layout = [r for r in rows if r["backend"] == "onnxruntime" and r["channels_last"]]
    assert all(r["error"].startswith("not applicable") for r in layout)
    # speed-ups are against eager PyTorch (fp32, contiguous) of the same mode and batch
    eager = next(r for r in rows if r["mode"] == "eval" and r["backend"] == "torch"
                 and not r["channels_last"] and not r["cudnn_benchmark"])  # fmt: skip
    ort = next(r for r in rows if r["backend"] == "onnxruntime" and r["error"] is None)
    assert ort["speedup"] == pytest.approx(ort["images_per_s"] / eager["images_per_s"])
    # train mode times the recipe's P×K batch times its gradient accumulation
    assert {r["batch"] for r in rows if r["mode"] == "train"} == {2 * 2 * 2}
    assert report["env"]["onnxruntime"]


def test_the_int8_backend_times_a_quantized_graph(monkeypatch):
    import onnx

    from reidcli.export import int8

    real, quantized = int8.quantize, []

    def recording(fp32, out, images, input_name):
        real(fp32, out, images, input_name)
        ops = {node.op_type for node in onnx.load(str(out)).graph.node}
        quantized.append((len(images), "QuantizeLinear" in ops and "DequantizeLinear" in ops))

    monkeypatch.setattr(int8, "quantize", recording)
    report = api.bench(
        overrides={**TINY, "bench.batch": [2], "bench.channels_last": True,
                   "bench.backend": ["onnxruntime-int8"]},
    ).to_json()  # fmt: skip
    check_report(report)
    rows = {(r["backend"], r["channels_last"]): r for r in report["results"]}
    assert rows[("onnxruntime-int8", False)]["error"] is None
    assert rows[("onnxruntime-int8", False)]["images_per_s"] > 0
    assert rows[("onnxruntime-int8", True)]["error"].startswith("not applicable")
    assert quantized == [(16, True)]  # one QDQ graph, calibrated on 16 random images


def test_compile_wraps_the_timed_module_in_both_modes(monkeypatch):
    # Dynamo traces the real modules; its eager backend stands in for inductor, whose C++ code
    # generation takes about a minute for the smallest model on two cores.
    real, compiled = torch.compile, []

    def eager(module, **kwargs):
        compiled.append(type(module).__name__)
        return real(module, backend="eager")

    monkeypatch.setattr(torch, "compile", eager)
    report = api.bench(overrides={**TINY, "bench.batch": [1], "bench.warmup": 1, "bench.iters": 1,
                                  "bench.compile": True, "bench.mode": "both", "data.p": 2,
                                  "data.k": 2}).to_json()  # fmt: skip
    assert compiled == ["EmbeddingGraph", "BackboneBNNeck"]  # what eval scores; the train model
    assert [(r["mode"], r["compile"], r["error"]) for r in report["results"]] == [
        ("eval", True, None),
        ("train", True, None),
    ]


def test_a_failing_row_is_recorded_and_the_run_goes_on(monkeypatch):
    real = steps.eval_step

    def flaky(recipe, setting, device, cache):
        if setting.batch == 2:
            raise RuntimeError("out of memory: tried to allocate 12 GiB\nsecond line")
        return real(recipe, setting, device, cache)

    monkeypatch.setattr(steps, "eval_step", flaky)
    report = api.bench(overrides={**TINY, "bench.batch": [1, 2, 3]}).to_json()
    by_batch = {r["batch"]: r for r in report["results"]}
    assert by_batch[2]["error"] == "RuntimeError: out of memory: tried to allocate 12 GiB"
    assert by_batch[2]["images_per_s"] is None
    assert by_batch[1]["images_per_s"] > 0 and by_batch[3]["images_per_s"] > 0


def test_seconds_and_threads():
    before = torch.get_num_threads()
    report = api.bench(overrides={**TINY, "bench.batch": [1], "bench.seconds": 0.3,
                                  "bench.threads": 1}).to_json()  # fmt: skip
    assert report["env"]["threads"] == 1 and torch.get_num_threads() == before
    assert report["settings"]["iters"] is None and report["settings"]["seconds"] == 0.3
    assert report["results"][0]["iterations"] >= 1


class Resolved(Exception):
    """Raised by a stand-in measurement with the recipe it was given."""


def test_quick_preset_and_flags_that_win(monkeypatch):
    seen = {}

    def resolved(recipe, reporter):
        seen["r"] = recipe
        raise Resolved

    monkeypatch.setattr(measure, "run_bench", resolved)
    with pytest.raises(Resolved):
        api.bench(quick=True, model="osnet_x0_25", overrides={"bench.iters": 4})
    bench = seen["r"].bench
    assert bench.batch == (1, 2) and bench.warmup == 1 and bench.iters == 4
    assert seen["r"].model.name == "osnet_x0_25"


@pytest.mark.parametrize(
    ("override", "message"),
    [("bench.batch=0", "batch sizes must be positive"), ("bench.backend=tensorrt", "torch"),
     ("bench.dtype=fp8", "bf16"), ("bench.tolerance=150", "less than 100")],
)  # fmt: skip
def test_invalid_bench_options(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, [override])


def test_recipes_saved_before_reid_bench_still_load():
    # the bench section every checkpoint's recipe held before: batch_size and amp: off|bf16|fp16
    old = {"batch_size": 32, "warmup": 3, "iters": 10, "amp": "bf16", "channels_last": False}
    bench = validate_recipe({"bench": old}).bench
    assert bench.batch == (32,) and bench.amp and bench.dtype == ("bf16",)
    bench = validate_recipe({"bench": {**old, "amp": "off"}}).bench
    assert not bench.amp and bench.dtype is None


def test_dtype_implies_amp():
    recipe = load_recipe(None, ["bench.dtype=fp16", "bench.batch=1"])
    rows = measure.plan(recipe, torch.device("cpu"))
    assert [s.precision for s, _ in rows] == ["fp32", "fp16"]


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_times_only_what_this_cpu_computes_in_hardware(monkeypatch, native):
    monkeypatch.setattr(measure, "cpu_has_native", lambda precision: native)
    recipe = load_recipe(None, ["bench.amp=auto", "bench.dtype=bf16,fp16", "bench.batch=1"])
    rows = measure.plan(recipe, torch.device("cpu"))
    assert [s.precision for s, _ in rows] == (["fp32", "bf16", "fp16"] if native else ["fp32"])
    assert measure.left_out(recipe, torch.device("cpu")) == ([] if native else ["bf16", "fp16"])
    # --amp (true) times an emulated precision anyway.
    recipe = load_recipe(None, ["bench.amp=true", "bench.batch=1"])
    assert [s.precision for s, _ in measure.plan(recipe, torch.device("cpu"))] == ["fp32", "bf16"]


def test_batch_and_lists_accept_one_or_many():
    bench = load_recipe(None, ["bench.batch=32", "bench.dtype=bf16,fp16"]).bench
    assert bench.batch == (32,) and bench.dtype == ("bf16", "fp16")
    assert load_recipe(None, ["bench.batch=[8, 1, 8]"]).bench.batch == (1, 8)


# The gate -----------------------------------------------------------------------------------


def test_gate_passes_against_itself(tiny_report):
    result = compare_reports(tiny_report, tiny_report, 25)
    assert result["passed"] and result["timing_compared"]
    assert len(result["rows"]) == 4 and not result["regressions"]


def test_gate_fails_on_a_doctored_size(tiny_report):
    for key, value in [("params", 1), ("gmacs", 99.0), ("embedding_dim", 7)]:
        baseline = copy.deepcopy(tiny_report)
        baseline[key] = value
        result = compare_reports(tiny_report, baseline, 25)
        assert not result["passed"]
        assert [m["key"] for m in result["size_mismatches"]] == [key]


def test_gate_fails_on_slower_rows_only_beyond_tolerance(tiny_report):
    baseline = copy.deepcopy(tiny_report)
    baseline["results"][1]["images_per_s"] *= 2.0  # now 50 % slower than the baseline
    baseline["results"][2]["images_per_s"] *= 1.2  # 17 % slower: within 25 %
    baseline["results"][3]["images_per_s"] /= 3.0  # faster now: never a regression
    result = compare_reports(tiny_report, baseline, 25)
    assert not result["passed"] and len(result["regressions"]) == 1
    assert "batch 1 bf16" in result["regressions"][0]
    assert compare_reports(tiny_report, baseline, 60)["passed"]


def test_gate_skips_timing_on_other_hardware_and_says_why(tiny_report):
    baseline = copy.deepcopy(tiny_report)
    for row in baseline["results"]:
        row["images_per_s"] *= 10
    baseline["env"]["device_name"] = "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    baseline["env"]["threads"] = 8
    result = compare_reports(tiny_report, baseline, 25)
    assert result["passed"] and not result["timing_compared"] and not result["rows"]
    reasons = " ".join(result["timing_not_compared_because"])
    assert "device_name" in reasons and "threads" in reasons


def test_gate_on_a_gpu_ignores_the_host_cpu(tiny_report):
    current = copy.deepcopy(tiny_report)
    current["env"].update(device="cuda", device_name="NVIDIA H200", cpu_capability="AVX2")
    baseline = copy.deepcopy(current)
    baseline["env"].update(cpu_capability="AVX512", threads=64)  # another host, the same GPU
    assert compare_reports(current, baseline, 25)["timing_compared"]
    baseline["env"]["device_name"] = "NVIDIA A100"
    assert not compare_reports(current, baseline, 25)["timing_compared"]


def test_gate_refuses_a_malformed_baseline(tiny_report):
    broken = {**tiny_report, "results": {"not": "a list"}}
    with pytest.raises(BenchError, match="must be an object"):
        compare_reports(tiny_report, broken, 25)


def test_gate_a_row_that_fails_now_is_a_regression(tiny_report):
    current = copy.deepcopy(tiny_report)
    current["results"][0].update(images_per_s=None, latency_ms=None, error="RuntimeError: x")
    result = compare_reports(current, tiny_report, 25)
    assert not result["passed"] and "fails now" in result["regressions"][0]


def test_gate_rows_on_one_side_only(tiny_report):
    current = copy.deepcopy(tiny_report)
    current["results"] = current["results"][:2]
    result = compare_reports(current, tiny_report, 25)
    assert result["passed"] and len(result["not_run"]) == 2


def test_cli_compare_exits_1_on_a_doctored_baseline(tiny_report, tmp_path, capsys):
    baseline = copy.deepcopy(tiny_report)
    baseline["params"] += 1
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline))
    out = tmp_path / "report.json"
    args = ["bench", "--model", "osnet_x0_25", "--input", "64x32", "--batch", "1,2", "--amp",
            "--warmup", "0", "--iters", "2", "--json", "--out", str(out)]  # fmt: skip
    code, stdout, stderr = run_cli(capsys, *args, "--compare", str(path))
    assert code == 1, stderr
    assert "regression against" in stderr and "params changed" in stderr
    doc = json.loads(stdout)
    assert doc["comparison"]["size_mismatches"][0]["key"] == "params"
    written = json.loads(out.read_text())
    check_report(written)
    assert "comparison" not in written  # --out writes the report: it can serve as a baseline
    # the report just written, as the baseline of the same command: exit 0 (two iterations are
    # noisy: the tolerance here lets any timing through; the doctored tests check it)
    code, stdout, stderr = run_cli(
        capsys, *args[:-3], "--compare", str(out), "--tolerance", "99", "--json"
    )
    assert code == 0, stderr
    assert "no regression" in stderr and "images/s" in stderr
    comparison = json.loads(stdout)["comparison"]
    assert comparison["timing_compared"] and len(comparison["rows"]) == 4


def test_cli_confirms_a_timing_regression_with_a_second_run(
    tiny_report, tmp_path, capsys, monkeypatch
):
    baseline = copy.deepcopy(tiny_report)
    for row in baseline["results"]:
        row["images_per_s"] *= 10
    path = tmp_path / "fast.json"
    path.write_text(json.dumps(baseline))
    calls = []
    real = measure.run_bench

    def counted(recipe, reporter):
        calls.append(1)
        return real(recipe, reporter)

    monkeypatch.setattr(measure, "run_bench", counted)
    code, _, stderr = run_cli(capsys, "bench", "--model", "osnet_x0_25", "--input", "64x32",
                              "--batch", "1,2", "--amp", "--warmup", "0", "--iters", "2",
                              "--compare", str(path))  # fmt: skip
    assert code == 1 and len(calls) == 2, stderr
    assert "measuring again to confirm" in stderr and "more than 25% slower" in stderr


def test_best_of_keeps_the_faster_row(tiny_report):
    slow, fast = copy.deepcopy(tiny_report), copy.deepcopy(tiny_report)
    slow["results"][0]["images_per_s"] = 1.0
    fast["results"][0]["images_per_s"] = 2.0
    fast["results"][1].update(images_per_s=None, error="RuntimeError: x")
    merged = best_of(slow, fast)
    assert merged["results"][0]["images_per_s"] == 2.0
    kept = merged["results"][1]  # a failure does not replace a timing
    assert kept["images_per_s"] == slow["results"][1]["images_per_s"] and kept["error"] is None
    # speed-ups follow the merged rows: batch 1 bf16 against the merged batch 1 fp32
    assert kept["speedup"] == pytest.approx(kept["images_per_s"] / 2.0)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such baseline file"), ("{not json", "not a JSON bench report"),
     ('{"schema_version": 0}', "schema_version 0"), ('{"schema_version": 1}', "missing")],
)  # fmt: skip
def test_cli_bad_baseline_exits_1_before_measuring(tmp_path, capsys, monkeypatch, content, message):
    monkeypatch.setattr(measure, "run_bench", lambda *a: pytest.fail("measured anyway"))
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    code, _, stderr = run_cli(capsys, "bench", "--compare", str(path))
    assert code == 1 and message in stderr and "Traceback" not in stderr  # bad data: exit 1


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--iters", "2", "--seconds", "1"], "not both"), (["--input", "64"], "HEIGHTxWIDTH"),
     (["--batch", "1,x"], "batch"), (["--model", "resnet18"], "resnet18"),
     (["--device", "tpu"], "tpu")],
)  # fmt: skip
def test_cli_usage_errors_exit_2(capsys, args, message):
    code, _, stderr = run_cli(capsys, "bench", *args)
    assert code == 2 and message in stderr and "Traceback" not in stderr


def test_compare_bench_api_reads_files(tiny_report, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(tiny_report))
    assert api.compare_bench(path, path).passed
    with pytest.raises(BenchError, match="tolerance"):
        api.compare_bench(tiny_report, tiny_report, tolerance=0)
