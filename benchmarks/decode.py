"""Decode JPEG person crops to (3, H, W) uint8 RGB tensors: torchvision.io against PIL.

Usage: python benchmarks/decode.py [FOLDER] [--images N] [--repeats R]

Reads the images in place (default: the Market-1501 subset beside the checkout), decodes each
with both decoders, checks they agree, and prints the best-of-R time per image.
"""

import argparse
import io
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file

DEFAULT = Path(__file__).resolve().parents[2] / "shared/data/market1501_subset/bounding_box_train"


def decode_pil(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        array = np.asarray(im.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def decode_torchvision(data: torch.Tensor) -> torch.Tensor:
    return decode_image(data, mode=ImageReadMode.RGB)


def best_time(fn, items, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(1)  # a loader worker decodes on one thread
    paths = sorted(args.folder.glob("*.jpg"))[: args.images]
    if not paths:
        sys.exit(f"no .jpg images in {args.folder}")
    raw = [p.read_bytes() for p in paths]  # decode from memory: the page cache is not measured
    tensors = [read_file(str(p)) for p in paths]
    diffs = [
        (decode_pil(r).int() - decode_torchvision(t).int()).abs().max().item()
        for r, t in zip(raw[:50], tensors[:50], strict=True)
    ]
    pil = best_time(decode_pil, raw, args.repeats)
    tv = best_time(decode_torchvision, tensors, args.repeats)
    print(f"images: {len(paths)} from {args.folder}, size {tuple(decode_pil(raw[0]).shape)}")
    print(f"max |PIL - torchvision| pixel difference (first 50): {max(diffs)}")
    print(f"PIL (open, convert RGB, to tensor): {pil * 1e6:8.1f} us/image")
    print(f"torchvision.io.decode_image RGB:    {tv * 1e6:8.1f} us/image  ({pil / tv:.2f}x)")
    print(f"loadavg: {Path('/proc/loadavg').read_text().strip()}  cpus: {os.cpu_count()}")


if __name__ == "__main__":
    main()
