"""How each `reid bench` row's timed step is built: the model with fresh weights, the eval
step of each backend (eager, TorchScript, ONNX Runtime, OpenVINO), the train step, and the
reference workload timed beside them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from reidcli.recipe import Recipe
from reidcli.verbs.bench import reference

if TYPE_CHECKING:
    from reidcli.verbs.bench.measure import Setting

# Classifier rows of the benchmarked model: Market-1501's 751 training identities, the heads
# SPEC's parameter counts include.
BENCH_CLASSES = 751


def build(recipe: Recipe):
    """The recipe's model with fresh weights (speed does not depend on them) and the same seed."""
    from reidcli.models.catalog import build_model

    torch.manual_seed(0)
    return build_model(recipe.model.model_copy(update={"pretrained": "none"}), BENCH_CLASSES)


def embedding_graph(recipe: Recipe, model, fp16: bool):
    from reidcli.export.graph import EmbeddingGraph

    data = recipe.data
    return EmbeddingGraph(
        model, flip=recipe.eval.flip, normalize=recipe.eval.normalize, mean=data.mean,
        std=data.std, fp16=fp16,
    )  # fmt: skip


@dataclass
class StepCache:
    """Exported graphs, made once per (backend, precision, layout) and reused across batches."""

    folder: Path
    items: dict = field(default_factory=dict)

    def get(self, key: tuple, make: Callable[[], Callable]) -> Callable:
        if key not in self.items:
            self.items[key] = make()
        return self.items[key]


def autocast_dtype(precision: str) -> torch.dtype | None:
    """A row's precision (fp32, bf16, fp16) as the autocast dtype the training runtime uses."""
    from reidcli.engine.runtime import AMP_DTYPES

    return AMP_DTYPES["off" if precision == "fp32" else precision]


def reference_step(recipe, setting: Setting, device) -> Callable[[], None]:
    """The reference workload at the row's batch, input size, precision and memory format."""
    images = random_images(setting, recipe, device)
    if setting.mode == "train":
        shape = (recipe.data.p * recipe.data.k, 3, recipe.data.height, recipe.data.width)
        images = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
        make = reference.train_step
    else:
        make = reference.eval_step
    channels_last = setting.channels_last and setting.backend == "torch"
    return make(images, autocast_dtype(setting.precision), channels_last, device)


def random_images(setting: Setting, recipe: Recipe, device) -> torch.Tensor:
    shape = (setting.batch, 3, recipe.data.height, recipe.data.width)
    images = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    fmt = torch.channels_last if setting.channels_last else torch.contiguous_format
    return images.to(device, memory_format=fmt)


def eval_step(recipe, setting: Setting, device, cache: StepCache) -> Callable[[], None]:
    fmt = torch.channels_last if setting.channels_last else torch.contiguous_format
    images = random_images(setting, recipe, device)
    fp16 = setting.precision == "fp16"
    if setting.backend == "torch":
        graph = embedding_graph(recipe, build(recipe).eval(), fp16=False).to(
            device, memory_format=fmt
        )
        module = torch.compile(graph) if setting.compile else graph
        dtype = autocast_dtype(setting.precision)

        def step() -> None:
            with (
                torch.inference_mode(),
                torch.autocast(device.type, dtype, enabled=dtype is not None),
            ):
                module(images)

        return step
    key = (setting.backend, setting.precision, setting.channels_last)
    if setting.backend == "torchscript":
        run = cache.get(key, lambda: torchscript_runner(recipe, fp16, fmt, images, device))
    else:
        run = cache.get(
            key, lambda: exported_runner(setting.backend, recipe, fp16, device, cache.folder)
        )
        images = images.cpu()  # ONNX Runtime and OpenVINO take numpy arrays
    return lambda: run(images)


def torchscript_runner(recipe, fp16: bool, fmt, example, device) -> Callable:
    from reidcli.export.writers import trace_torchscript

    graph = embedding_graph(recipe, build(recipe).eval(), fp16=fp16).to(device, memory_format=fmt)
    module = trace_torchscript(graph, example[:2] if example.shape[0] > 1 else example)
    # As `reid embed` runs a TorchScript file: the profiling executor fuses nothing on the CPU.
    optimize = device.type != "cpu"

    def run(images: torch.Tensor) -> None:
        with torch.no_grad(), torch.jit.optimized_execution(optimize):
            module(images)

    return run


# INT8 rows: the graph calibrated on this many random images (their speed, not their accuracy).
INT8_CALIBRATION_IMAGES = 16


def exported_runner(backend: str, recipe, fp16: bool, device, folder: Path) -> Callable:
    """The model exported to ONNX (and converted to OpenVINO IR for `openvino`), as run;
    `*-int8`: the ONNX file quantized by ONNX Runtime (QDQ, as `reid export --int8` writes it)
    on random images, run by ONNX Runtime or converted for OpenVINO."""
    from reidcli.export.writers import export_onnx, require_onnxruntime
    from reidcli.inference.runners import open_onnx

    runtime, _, int8 = backend.partition("-")
    if runtime == "onnxruntime" or int8:
        require_onnxruntime()
    graph = embedding_graph(recipe, build(recipe).eval(), fp16=fp16)
    path = folder / f"model-{'fp16' if fp16 else 'fp32'}.onnx"
    if not path.exists():  # every backend runs the same ONNX file
        example = torch.zeros(2, 3, recipe.data.height, recipe.data.width)
        export_onnx(graph, example, path, opset=recipe.export.opset, dynamic_batch=True)
    if int8:
        path = _quantized(path, recipe)
    if runtime == "onnxruntime":
        run, _ = open_onnx(path, device.type, recipe.bench.threads)
        return run
    from reidcli.export.openvino import convert, open_openvino

    ir = folder / f"{path.stem}_openvino_model"
    convert(path, ir, {}, fp16)
    run, _ = open_openvino(ir, device.type, recipe.bench.threads)
    return run


def _quantized(fp32: Path, recipe) -> Path:
    """The INT8 version of the ONNX file `fp32` beside it (made once)."""
    from reidcli.export.int8 import quantize

    out = fp32.with_name("model-int8.onnx")
    if not out.exists():
        generator = np.random.default_rng(0)
        shape = (INT8_CALIBRATION_IMAGES, 3, recipe.data.height, recipe.data.width)
        quantize(fp32, out, generator.standard_normal(shape).astype(np.float32), "images")
    return out


def train_step(recipe: Recipe, setting: Setting, device) -> Callable[[], None]:
    from reidcli.engine.optim import build_optimizer
    from reidcli.engine.runtime import Runtime
    from reidcli.engine.setup import feature_dims
    from reidcli.engine.step import TrainStep
    from reidcli.losses.criterion import build_criterion

    runtime = Runtime(
        device, amp_dtype=autocast_dtype(setting.precision), channels_last=setting.channels_last
    )
    model = build(recipe).to(device).train()
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = build_criterion(recipe.loss, BENCH_CLASSES, feature_dims(model, recipe, runtime))
    optimizer = build_optimizer(recipe.optim, model, criterion.to(device))
    module = torch.compile(model) if setting.compile else model
    step = TrainStep(module, criterion, optimizer, runtime, recipe.train.grad_clip)
    p, k = recipe.data.p, recipe.data.k
    images = torch.randn(p * k, 3, recipe.data.height, recipe.data.width)
    labels = torch.arange(p).repeat_interleave(k)
    micro_batches = [(images, labels)] * recipe.train.grad_accum
    return lambda: step(micro_batches, 0)
