"""LMBN_n training throughput: the real train step (model, 0.5·CE + 0.5·MS, Adam).

Usage: python benchmarks/train_step.py [--model lmbn_n] [--steps 6] [--warmup 2]
       [--modes fp32,bf16,bf16_cl] [--height 384 --width 128 --p 6 --k 8]

Prints a markdown table of images/s for each precision mode.
"""

import argparse
import platform
import time

import torch

from reidcli.engine.optim import build_optimizer
from reidcli.engine.runtime import Runtime
from reidcli.engine.step import TrainStep
from reidcli.losses.criterion import build_criterion
from reidcli.models.catalog import build_model
from reidcli.recipe import validate_recipe

MODES = {
    "fp32": ("off", False),
    "fp32_cl": ("off", True),
    "bf16": ("bf16", False),
    "bf16_cl": ("bf16", True),
}


def measure(args, mode: str) -> float:
    amp, channels_last = MODES[mode]
    recipe = validate_recipe(
        {
            "model": {"name": args.model, "pretrained": "none"},
            "loss": "0.5*CrossEntropy+0.5*MSLoss",
            "optim": {"name": "adam", "lr": 6e-4},
            "train": {"amp": amp, "channels_last": channels_last},
            "data": {"height": args.height, "width": args.width, "p": args.p, "k": args.k},
        }
    )
    torch.manual_seed(0)
    dtype = torch.bfloat16 if amp == "bf16" else None
    runtime = Runtime(torch.device("cpu"), amp_dtype=dtype, channels_last=channels_last)
    model = build_model(recipe.model, args.classes)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    criterion = build_criterion(recipe.loss, args.classes, [args.feats] * 3)
    optimizer = build_optimizer(recipe.optim, model, criterion)
    step = TrainStep(model, criterion, optimizer, runtime)
    batch = args.p * args.k
    images = torch.randn(batch, 3, args.height, args.width)
    labels = torch.arange(args.p).repeat_interleave(args.k)
    for i in range(args.warmup):
        step([(images, labels)], i)
    start = time.perf_counter()
    for i in range(args.steps):
        step([(images, labels)], i)
    return args.steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="lmbn_n")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--modes", default="fp32,bf16,bf16_cl")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--p", type=int, default=6)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--classes", type=int, default=751)
    parser.add_argument("--feats", type=int, default=512)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor()}")
    print("| model | batch | input | mode | images/s |\n|---|---|---|---|---|")
    for mode in args.modes.split(","):
        rate = measure(args, mode)
        shape = f"{args.p}x{args.k} | {args.height}x{args.width}"
        print(f"| {args.model} | {shape} | {mode} | {rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
