"""LMBN_n embedding throughput on this machine: PyTorch eager, TorchScript and ONNX Runtime.

Usage: python benchmarks/embed_throughput.py [--batches 1 32] [--repeats 3] [--exporter auto]

The timed function is the exported graph (`reidcli.export.graph.EmbeddingGraph`): `model.embed`
with the lmbn_n recipe's eval settings (flip TTA, per-branch normalisation), fp32, on
(batch, 3, 384, 128) float32 inputs, 751-class LMBN_n with random weights. Eager runs the module
under `torch.no_grad()`; TorchScript is traced, saved and loaded with `torch.jit.load`, and timed
with the JIT's defaults and, as `reid embed` runs it on the CPU, without the profiling executor;
ONNX Runtime loads the file `reid export` would write (CPU provider, default session options).
Each setting is warmed up (2 batches), then the median of `--repeats` timed batches (5x as many
at batch 1) is reported as images per second (an image is one crop; flip TTA runs each crop
twice), with the load average before and after (other jobs share the cores).
"""

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from reidcli.export.graph import EmbeddingGraph
from reidcli.export.writers import export_onnx, save_torchscript, trace_torchscript
from reidcli.models.lmbn import build_lmbn_n
from reidcli.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} logical CPUs"


def median_seconds(run, images, warmup: int, repeats: int) -> float:
    """Median wall time of `run(images)` after `warmup` untimed calls."""
    for _ in range(warmup):
        run(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(images)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per setting")
    parser.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "legacy"])
    args = parser.parse_args()

    import onnxruntime as ort

    recipe = load_recipe(ROOT / "recipes" / "lmbn_n.yaml")
    height, width = recipe.data.height, recipe.data.width
    torch.manual_seed(0)
    model = build_lmbn_n(751).eval()
    graph = EmbeddingGraph(
        model, flip=recipe.eval.flip, normalize=recipe.eval.normalize, mean=recipe.data.mean,
        std=recipe.data.std,
    )  # fmt: skip
    print(f"machine: {cpu_name()}; torch {torch.__version__} ({torch.get_num_threads()} threads),"
          f" onnxruntime {ort.__version__}")  # fmt: skip
    print(f"embedding: lmbn_n, {height}x{width}, flip={recipe.eval.flip}, "
          f"normalize={recipe.eval.normalize}, {model.embedding_dim}-d, fp32")  # fmt: skip
    example = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as folder:
        onnx_path, ts_path = Path(folder) / "lmbn_n.onnx", Path(folder) / "lmbn_n.torchscript"
        started = time.perf_counter()
        done = export_onnx(graph, example, onnx_path, opset=recipe.export.opset,
                           dynamic_batch=True, exporter=args.exporter)  # fmt: skip
        print(f"ONNX export ({done.exporter}): {time.perf_counter() - started:.0f} s")
        save_torchscript(trace_torchscript(graph, example), ts_path, {})
        scripted = torch.jit.load(str(ts_path))
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

        def scripted_plain(x):
            with torch.jit.optimized_execution(False):  # as `reid embed` runs it on the CPU
                return scripted(torch.from_numpy(x))

        backends = {
            "PyTorch eager": lambda x: graph(torch.from_numpy(x)),
            "TorchScript (JIT defaults)": lambda x: scripted(torch.from_numpy(x)),
            "TorchScript (no profiling executor)": scripted_plain,
            "ONNX Runtime": lambda x: session.run(None, {"images": x})[0],
        }
        print(f"load average before: {load_average()}")
        print("| batch | backend | s/batch | images/s | vs eager |")
        print("|---|---|---|---|---|")
        for batch in args.batches:
            images = np.random.default_rng(batch).standard_normal(
                (batch, 3, height, width), dtype=np.float32
            )
            repeats = args.repeats * (5 if batch == 1 else 1)
            rates = {}
            with torch.no_grad():
                for name, run in backends.items():
                    seconds = median_seconds(run, images, warmup=2, repeats=repeats)
                    rates[name] = batch / seconds
                    ratio = rates[name] / rates["PyTorch eager"]
                    print(f"| {batch} | {name} | {seconds:.3f} | {rates[name]:.2f} | "
                          f"{ratio:.2f}× |", flush=True)  # fmt: skip
        print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
