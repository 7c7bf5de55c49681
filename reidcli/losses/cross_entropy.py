"""Classification losses on the logits of one head: label-smoothed cross-entropy and focal."""

import torch
import torch.nn.functional as F
from torch import Tensor


def as_float(x: Tensor) -> Tensor:
    """Promote half and bfloat16 inputs to float32; losses are unstable in reduced precision."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.1) -> Tensor:
    """Cross-entropy against the smoothed target (1 − ε)·onehot + ε/C, averaged over the batch.

    Args:
        logits: (B, C) classifier outputs.
        labels: (B,) class indices.
        label_smoothing: ε.

    Returns:
        A scalar tensor.
    """
    return F.cross_entropy(as_float(logits), labels, label_smoothing=label_smoothing)


def focal(logits: Tensor, labels: Tensor, alpha: float = 1.0, gamma: float = 2.0) -> Tensor:
    """Focal loss −α(1 − p_y)^γ log p_y (Lin et al. 2017), averaged over the batch.

    Args:
        logits: (B, C) classifier outputs.
        labels: (B,) class indices.
        alpha: constant factor α.
        gamma: focusing exponent γ.

    Returns:
        A scalar tensor.
    """
    # (B,) log p_y taken from log_softmax so that confident samples do not underflow.
    log_p = F.log_softmax(as_float(logits), dim=1).gather(1, labels[:, None]).squeeze(1)
    return (-alpha * (1 - log_p.exp()).pow(gamma) * log_p).mean()
