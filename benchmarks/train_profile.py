"""Where the time of one training step goes: torch.profiler over `reid bench`'s train step.

Usage: .venv/bin/python benchmarks/train_profile.py [RECIPE] [--channels-last] [--amp bf16]
       [--compile] [--device cpu|cuda] [--steps 2] [--top 15]

The step is the one `reid bench --mode train` times (`reidcli.verbs.bench.measure`): the recipe's
model, loss and optimiser on a P×K batch of random images at the recipe's input size, forward,
backward and update. One warm-up step (with `--compile`, torch.compile's inductor compiles
during it: its time is printed), then `--steps` timed steps and `--steps` profiled ones; prints
the operators with the largest self CPU time and the share of the usual groups (convolution,
batch norm, ...). On CUDA it also prints the GPU's busy time per step (self CUDA time): a step
much longer than that is bound by the host (Python and kernel launches), not by the GPU.
"""

import argparse
import sys
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from reidcli.recipe import load_recipe
from reidcli.verbs.bench.measure import Setting, _train_step

# Operator name fragments -> the group they count in (first match wins).
GROUPS = (
    ("convolution", ("convolution", "conv2d", "mkldnn_conv")),
    ("batch norm", ("batch_norm",)),
    ("matrix products", ("addmm", "mm", "bmm", "linear", "matmul")),
    ("pooling", ("pool",)),
    ("optimiser", ("adam", "_foreach")),
)


def group_of(name: str) -> str:
    low = name.lower()
    for group, parts in GROUPS:
        if any(p in low for p in parts):
            return group
    return "other (element-wise, copies, losses)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="recipes/lmbn_n.yaml")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--amp", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    recipe = load_recipe(args.recipe)
    setting = Setting("train", recipe.data.p * recipe.data.k, args.amp, args.channels_last,
                      cudnn_benchmark=None, backend="torch", compile=args.compile)  # fmt: skip
    device = torch.device(args.device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step = _train_step(recipe, setting, device)
    begin = time.perf_counter()
    step()  # warm-up (and compilation)
    sync()
    print(f"first step (warm-up{', compilation' if args.compile else ''}): "
          f"{time.perf_counter() - begin:.1f} s")  # fmt: skip
    times = []
    for _ in range(args.steps):
        begin = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - begin)
    print(f"timed steps: {', '.join(f'{t:.2f}' for t in times)} s")
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        begin = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        seconds = (time.perf_counter() - begin) / args.steps
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.recipe}: {setting.batch} images of {recipe.data.height}x{recipe.data.width}, "
          f"{args.amp}, {'channels_last' if args.channels_last else 'NCHW'}, "
          f"{'compiled' if args.compile else 'eager'}, "
          f"{device.type}, {torch.get_num_threads()} threads: "
          f"{seconds:.3f} s per step (profiled)")  # fmt: skip
    if device.type == "cuda":
        busy = sum(e.self_device_time_total for e in events) / 1e6 / args.steps
        launches = sum(e.count for e in events if e.self_device_time_total > 0) / args.steps
        print(
            f"GPU busy {busy:.4f} s per step ({100 * busy / seconds:.0f} % of the step), "
            f"{launches:.0f} kernels and copies per step"
        )
    print(f"\n{'operator':44s} {'self CPU %':>10s} {'calls':>7s}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"{e.key[:44]:44s} {100 * e.self_cpu_time_total / total:9.1f}% {e.count:7d}")
    shares: dict[str, float] = defaultdict(float)
    for e in events:
        shares[group_of(e.key)] += e.self_cpu_time_total
    print()
    for group, value in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"{group:44s} {100 * value / total:9.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
