"""Forward throughput of LMBN_n and LMBN_r in evaluation mode on this machine's CPU.

Usage: python benchmarks/models.py [--models lmbn_n lmbn_r] [--batch 32] [--repeats 3]

Each model runs a (batch, 3, 384, 128) forward in eval mode under `torch.no_grad()` in three
settings: fp32, bf16 autocast, and bf16 autocast with channels_last (model and input). One warm-up
pass precedes the timed ones; the median is reported as images per second, with the load average
read before the runs (other jobs share the cores).
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from reidcli.models.lmbn import build_lmbn_n, build_lmbn_r

BUILDERS = {"lmbn_n": build_lmbn_n, "lmbn_r": build_lmbn_r}
SETTINGS = ("fp32", "bf16", "bf16+channels_last")


def time_forward(model, images, setting: str, repeats: int) -> float:
    """Median seconds of one forward pass in `setting`."""
    channels_last = setting.endswith("channels_last")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    images = images.contiguous(memory_format=fmt)
    times = []
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=setting != "fp32"):
        for _ in range(repeats + 1):  # the first pass warms up
            start = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - start)
    model.to(memory_format=torch.contiguous_format)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"load average before: {' '.join(load)}")
    images = torch.randn(args.batch, 3, 384, 128, generator=torch.Generator().manual_seed(0))
    print("| model | setting | batch | s/batch | images/s |")
    print("|---|---|---|---|---|")
    for name in args.models:
        model = BUILDERS[name](751).eval()
        for setting in SETTINGS:
            seconds = time_forward(model, images, setting, args.repeats)
            rate = args.batch / seconds
            print(f"| {name} | {setting} | {args.batch} | {seconds:.2f} | {rate:.1f} |")
    print(f"load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
