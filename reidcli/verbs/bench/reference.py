"""A fixed reference workload timed beside each bench row, so that speed compares across CPUs.

Absolute images/s differ between machines of one kind (another CPU model, another neighbour), so
a baseline in images/s can gate only the CPU it was recorded on. The ratio of the model's speed
to a workload whose code never changes, timed in the same process, interleaved iteration by
iteration, at the same batch, input size, precision and memory format, moves far less: both
see the same clock, caches, kernels and neighbours. The reference is torchvision's MobileNetV2
(pointwise and depthwise convolutions, batch norm, ReLU6: the operations of OSNet and LMBN) with
seeded random weights; torchvision is pinned with torch, so its code is fixed for a baseline.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NAME = "torchvision mobilenet_v2 (random weights, seed 0, 1000 classes)"


def build() -> nn.Module:
    """The reference network, always the same weights."""
    from torchvision.models import mobilenet_v2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return mobilenet_v2(weights=None)


def eval_step(
    images: torch.Tensor, dtype: torch.dtype | None, channels_last: bool, device: torch.device
) -> Callable[[], None]:
    """One forward pass of `images` in inference mode, under autocast to `dtype` when given."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build().eval().to(device, memory_format=fmt)
    images = images.to(device, memory_format=fmt)

    def step() -> None:
        with torch.inference_mode(), _autocast(device, dtype):
            model(images)

    return step


def train_step(
    images: torch.Tensor, dtype: torch.dtype | None, channels_last: bool, device: torch.device
) -> Callable[[], None]:
    """Forward, cross-entropy, backward and an SGD update on `images` (fixed labels)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build().train().to(device, memory_format=fmt)
    images = images.to(device, memory_format=fmt)
    labels = torch.arange(images.shape[0], device=device) % 1000
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            loss = nn.functional.cross_entropy(model(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
