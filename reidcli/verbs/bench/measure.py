"""Size and speed of a catalog model in every setting the recipe's `bench` section asks for.

Eval mode times `EmbeddingGraph` — `model.embed` with the recipe's flip and normalisation, the
computation `reid eval` scores and `reid export` writes — on one (B, 3, H, W) batch, for each
backend: PyTorch (eager or `torch.compile`d), a TorchScript trace, or ONNX Runtime on the
exported file. Train mode times a whole step (forward, the recipe's loss, backward, optimiser)
at the recipe's P×K batch (× `train.grad_accum`). Each row builds its model afresh with the same
seed; a row that fails (out of memory, a precision the device lacks) keeps its error and the run
goes on. With `bench.reference`, a fixed reference workload (`reference.py`) is timed in
alternation with the row's own iterations, and the row records its speed relative to it.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from reidcli.engine.runtime import cpu_has_native, peak_memory_mb, reset_peak_memory
from reidcli.recipe import Recipe
from reidcli.recipe.loading import as_overrides
from reidcli.reporting import Reporter
from reidcli.verbs.bench import reference, steps
from reidcli.verbs.bench.compare import SCHEMA_VERSION, add_speedups
from reidcli.verbs.bench.steps import BENCH_CLASSES
from reidcli.verbs.bench.system import environment
from reidcli.verbs.bench.timing import time_interleaved, time_steps

log = logging.getLogger(__name__)

# `--quick`: a preset that finishes in under a minute for LMBN_n on two CPU cores, with `--amp`
# too (a CPU without native bf16 runs an LMBN_n bf16 batch of 2 in about 9 s).
QUICK = {"bench.batch": [1, 2], "bench.warmup": 1, "bench.iters": 2, "bench.seconds": None}


@dataclass(frozen=True)
class Setting:
    """One row of the report: what is timed and how."""

    mode: str
    batch: int
    precision: str
    channels_last: bool
    cudnn_benchmark: bool | None
    backend: str
    compile: bool


def precisions_asked(recipe: Recipe, device: torch.device) -> list[str]:
    """fp32 and the autocast precisions the bench section names for this device."""
    cfg = recipe.bench
    precisions = ["fp32"]
    if cfg.amp or cfg.dtype:  # naming the autocast precisions asks for them
        precisions += list(cfg.dtype or (("fp16",) if device.type == "cuda" else ("bf16",)))
    return precisions


def left_out(recipe: Recipe, device: torch.device) -> list[str]:
    """The precisions `amp: auto` leaves out here: those this CPU emulates."""
    if recipe.bench.amp != "auto" or device.type != "cpu":
        return []
    return [p for p in precisions_asked(recipe, device) if p != "fp32" and not cpu_has_native(p)]


def plan(recipe: Recipe, device: torch.device) -> list[tuple[Setting, str | None]]:
    """Every row to time, each with the reason it cannot run here (None when it can)."""
    cfg = recipe.bench
    skipped = left_out(recipe, device)
    precisions = [p for p in precisions_asked(recipe, device) if p not in skipped]
    layouts = [False, True] if cfg.channels_last else [False]
    cuda = device.type == "cuda"
    plain = False if cuda else None  # cudnn.benchmark means nothing on the CPU
    cudnn = [plain, True] if cfg.cudnn_benchmark else [plain]
    modes = ["eval", "train"] if cfg.mode == "both" else [cfg.mode]
    train_batch = recipe.data.p * recipe.data.k * recipe.train.grad_accum
    rows = []
    for mode in modes:
        backends = cfg.backend if mode == "eval" else ("torch",)
        batches = cfg.batch if mode == "eval" else (train_batch,)
        for backend in backends:
            for batch in batches:
                for precision in precisions:
                    for channels_last in layouts:
                        for bench_cudnn in cudnn:
                            compiled = cfg.compile and backend == "torch"
                            setting = Setting(
                                mode, batch, precision, channels_last, bench_cudnn, backend,
                                compiled,
                            )  # fmt: skip
                            rows.append((setting, _not_applicable(setting, cuda)))
    return rows


def _not_applicable(setting: Setting, cuda: bool) -> str | None:
    if setting.cudnn_benchmark and not cuda:
        return "not applicable: cuDNN runs only on CUDA devices"
    int8 = setting.backend.endswith("-int8")
    if int8 and setting.precision != "fp32":
        return f"not applicable: {setting.backend} runs the INT8 graph quantized from fp32"
    if setting.backend != "torch" and setting.precision == "bf16":
        return f"not applicable: {setting.backend} runs the exported fp32 or fp16 graph"
    if setting.backend not in ("torch", "torchscript") and setting.channels_last:
        return f"not applicable: {setting.backend} chooses its own memory layout"
    if setting.backend.startswith("openvino") and cuda:
        return "not applicable: OpenVINO runs on the CPU here"
    if int8 and cuda:
        return "not applicable: the INT8 graph is timed on the CPU"
    return None


def measure(recipe, model: str | None, overrides: list[str], quick: bool, reporter) -> dict:
    """See `reidcli.api.bench`: the recipe resolved with the preset and overrides, measured."""
    from reidcli.recipe import Recipe as RecipeModel
    from reidcli.recipe import load_recipe, override_recipe

    changes = as_overrides(QUICK) if quick else []  # the preset, then what the caller gives
    changes += [f"model.name={model}"] if model is not None else []
    changes += overrides
    if isinstance(recipe, RecipeModel):
        resolved = override_recipe(recipe, changes)
    else:
        resolved = load_recipe(recipe, changes)
    return run_bench(resolved, reporter)


def run_bench(recipe: Recipe, reporter: Reporter | None = None) -> dict:
    """Measure the recipe's model as its `bench` section says; the report `reid bench` prints.

    Raises:
        DeviceError: the device does not exist here.
        RecipeError: the model cannot be built from the recipe.
    """
    from reidcli.engine.runtime import resolve_device

    reporter = reporter or Reporter()
    cfg = recipe.bench
    device = resolve_device(cfg.device)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn_deterministic = torch.backends.cudnn.deterministic
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        # The default kernels (a caller's deterministic mode would slow every row), and the
        # caller's random state left as it was (each row seeds its own model).
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        with torch.random.fork_rng(devices=[]):
            return _run(recipe, device, reporter)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.deterministic = cudnn_deterministic


def _run(recipe: Recipe, device: torch.device, reporter: Reporter) -> dict:
    cfg = recipe.bench
    size = model_size(recipe)
    rows = plan(recipe, device)
    results = []
    reporter.start(f"bench {recipe.model.name}", total=len(rows))
    with tempfile.TemporaryDirectory(prefix="reid-bench-") as tmp:
        cache = steps.StepCache(Path(tmp))
        for setting, reason in rows:
            results.append(_measure_row(recipe, setting, reason, device, cache))
            rate = results[-1]["images_per_s"]
            speed = f"{rate:.1f} images/s" if rate else "—"
            reporter.advance(info=f"{setting.mode} {setting.batch} {setting.precision}: {speed}")
    reporter.finish()
    add_speedups(results)
    used = sorted({s.backend for s, _ in rows})
    return {
        "schema_version": SCHEMA_VERSION,
        **size,
        "input": [recipe.data.height, recipe.data.width],
        "settings": {
            "warmup": cfg.warmup,
            "iters": None if cfg.seconds else cfg.iters,
            "seconds": cfg.seconds,
            "tolerance": cfg.tolerance,
            "reference": reference.NAME if cfg.reference else None,
            "num_classes": BENCH_CLASSES,
            "loss": [term.name for term in recipe.loss],
            "optim": recipe.optim.name,
            # amp: auto leaves out what this CPU emulates; the table says so.
            "precisions_left_out": left_out(recipe, device),
        },
        "env": environment(device, used),
        "results": results,
    }


def model_size(recipe: Recipe) -> dict:
    """Parameters (total, trainable, without classifiers) and GMac/GFLOPs of one image.

    `gmacs`/`gflops` are those of the embedding as evaluated (two passes with flip TTA);
    `forward_gmacs` is one forward pass, the figure papers quote. Counted by
    `torch.utils.flop_counter` (convolutions and matrix products; MACs = FLOPs / 2).
    """
    from reidcli.models.complexity import count_macs, count_parameters

    model = steps.build(recipe).eval()
    graph = steps.embedding_graph(recipe, model, fp16=False)
    image = torch.zeros(1, 3, recipe.data.height, recipe.data.width)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        graph(image)
    flops = counter.get_total_flops()
    trainable = sum(p.numel() for _, p in model.named_parameters() if p.requires_grad)
    return {
        "model": recipe.model.name,
        "params": count_parameters(model),
        "params_trainable": trainable,
        "params_without_classifier": count_parameters(model, exclude_classifier=True),
        "gmacs": flops / 2e9,
        "gflops": flops / 1e9,
        "forward_gmacs": count_macs(model, recipe.data.height, recipe.data.width) / 1e9,
        "flip": recipe.eval.flip,
        "embedding_dim": model.embedding_dim,
    }


def _measure_row(recipe, setting: Setting, reason, device, cache: steps.StepCache) -> dict:
    row = {
        **asdict(setting),
        "images_per_s": None,
        "latency_ms": None,
        "peak_memory_mb": None,
        "speedup": None,
        "iterations": 0,
        "error": reason,
    }
    if recipe.bench.reference:
        row.update(reference_images_per_s=None, relative_speed=None)
    if reason is not None:
        return row
    cudnn_before = torch.backends.cudnn.benchmark
    if setting.compile:
        torch._dynamo.reset()  # each compiled row starts clean (no recompile limit reached)
    try:
        torch.backends.cudnn.benchmark = bool(setting.cudnn_benchmark)
        reset_peak_memory(device)
        if setting.mode == "train":
            step = steps.train_step(recipe, setting, device)
        else:
            step = steps.eval_step(recipe, setting, device, cache)
        if recipe.bench.reference:
            times, reference_times = time_interleaved(
                step, steps.reference_step(recipe, setting, device), recipe.bench, device
            )
        else:
            times, reference_times = time_steps(step, recipe.bench, device), []
    except Exception as err:  # out of memory, an unsupported dtype, an exporter failure: the row
        row["error"] = _one_line(err)
        log.debug("bench row %s failed", setting, exc_info=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return row
    finally:
        torch.backends.cudnn.benchmark = cudnn_before
    p50, p90, p99 = (float(v) for v in np.percentile(times, [50, 90, 99]))
    # ONNX Runtime allocates GPU memory outside torch's allocator: not measured there.
    unseen = device.type == "cuda" and setting.backend.startswith("onnxruntime")
    row.update(
        images_per_s=setting.batch / p50,
        latency_ms={"p50": p50 * 1e3, "p90": p90 * 1e3, "p99": p99 * 1e3},
        peak_memory_mb=None if unseen else peak_memory_mb(device),
        iterations=len(times),
    )
    if reference_times:
        # Each iteration's own ratio (the two steps ran back to back, under the same load), then
        # the median over iterations.
        ratios = [r / t for t, r in zip(times, reference_times, strict=True)]
        row.update(
            reference_images_per_s=setting.batch / float(np.median(reference_times)),
            relative_speed=float(np.median(ratios)),
        )
    return row


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}".rstrip(": ")
