"""Model size: unique parameters and multiply-accumulates (torch's own FLOP counter)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reidcli.models.base import is_classifier_key


def count_parameters(model: nn.Module, *, exclude_classifier: bool = False) -> int:
    """Number of parameters, each shared tensor once (frozen ones included).

    Args:
        model: any module.
        exclude_classifier: leave out classification layers (named `classifier`).
    """
    # named_parameters() yields a tensor shared by several modules only once.
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if not (exclude_classifier and is_classifier_key(name))
    )


def count_macs(model: nn.Module, height: int, width: int) -> int:
    """Multiply-accumulates of one eval-mode forward pass on a (1, 3, height, width) image.

    Counted by `torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products);
    MACs = FLOPs / 2. The model's training mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    image = torch.zeros(1, 3, height, width, device=param.device, dtype=param.dtype)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(image)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
