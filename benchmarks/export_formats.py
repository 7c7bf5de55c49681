"""Embedding throughput of every deployment format, side by side in one process.

Usage: python benchmarks/export_formats.py [--model lmbn_n] [--size 384x128] [--batches 1,32]
       [--data ../shared/data/market1501_subset] [--out /tmp/reid-formats] [--iters 3]
       [--max-map-drop 100]

For a checkpoint of the model with fresh (seeded) weights, `reid export` writes the ONNX file,
the OpenVINO folder and the INT8 ONNX file (calibrated on the prepared subset's train crops);
each is then timed through `reid embed`'s loader (`load_exported_runner`) at each batch size, with
PyTorch eager (the checkpoint runner) beside them: one warm-up batch, then the median of
`--iters` batches, the rows of one batch size interleaved so that a neighbour slows them all
alike. Prints the CPU, its kernel set and every figure as images/s and relative to ONNX Runtime
fp32. Fresh weights make the INT8 file's retrieval meaningless, hence `--max-map-drop 100`: this
script measures speed, `tests/test_int8.py` and a trained model measure accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def checkpoint(folder: Path, model: str, size: tuple[int, int], data: Path) -> Path:
    from reidcli.engine.checkpoint import save_checkpoint
    from reidcli.models import build_model
    from reidcli.recipe import validate_recipe

    raw = {
        "data": {"dataset": "market1501", "root": str(data), "height": size[0], "width": size[1]},
        "model": {"name": model, "pretrained": "none"},
    }
    recipe = validate_recipe(raw, source="benchmark")
    torch.manual_seed(0)
    net = build_model(recipe.model, 751)
    path = folder / "model.pt"
    save_checkpoint(path, {"model": net.state_dict(), "recipe": json.dumps(recipe.to_dict()),
                           "num_classes": 751, "epoch": 0, "step": 0})  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="lmbn_n")
    parser.add_argument("--size", default="384x128")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/market1501_subset"))
    parser.add_argument("--out", default="/tmp/reid-formats")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--max-map-drop", type=float, default=100.0)
    args = parser.parse_args()

    from reidcli import api
    from reidcli.inference.runners import load_checkpoint_runner, load_exported_runner
    from reidcli.verbs.bench.system import cpu_name

    out = Path(args.out) / args.model
    out.mkdir(parents=True, exist_ok=True)
    prepared = Path(args.out) / "data"
    if not (prepared / "manifest.csv").exists():
        api.prepare("market1501", root=args.data, out=str(prepared), val_ids=10)
    size = tuple(int(v) for v in args.size.split("x"))
    ckpt = checkpoint(out, args.model, size, prepared)
    files = {}
    for name, kwargs in (
        ("onnxruntime fp32", {"formats": "onnx", "out": out / "model.onnx"}),
        ("openvino fp32", {"formats": "openvino", "out": out / "model_openvino_model"}),
        ("onnxruntime int8", {"formats": "onnx", "out": out / "model-int8.onnx", "int8": True,
                              "calibrate": str(prepared), "max_map_drop": args.max_map_drop}),
    ):  # fmt: skip
        started = time.perf_counter()
        api.export(ckpt, **kwargs)
        files[name] = kwargs["out"]
        print(f"exported {name} in {time.perf_counter() - started:.0f} s", flush=True)
    runners = {"pytorch eager": load_checkpoint_runner(ckpt, None, "cpu")[0]}
    runners.update({name: load_exported_runner(path, "cpu") for name, path in files.items()})
    print(f"CPU: {cpu_name()}, kernels {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    print(f"{args.model} {args.size}: images/s (relative to onnxruntime fp32)")
    for batch in (int(b) for b in args.batches.split(",")):
        images = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1))
        times: dict[str, list[float]] = {name: [] for name in runners}
        for run in runners.values():
            run(images)  # warm-up
        for _ in range(args.iters):
            for name, run in runners.items():
                started = time.perf_counter()
                run(images)
                times[name].append(time.perf_counter() - started)
        rates = {name: batch / statistics.median(t) for name, t in times.items()}
        base = rates["onnxruntime fp32"]
        line = ", ".join(f"{n} {r:.1f} ({r / base:.2f}x)" for n, r in rates.items())
        print(f"batch {batch}: {line}", flush=True)


if __name__ == "__main__":
    main()
