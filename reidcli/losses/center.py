"""Center loss (Wen et al., ECCV 2016) with learnt class centres."""

from torch import Tensor

from reidcli.losses.cross_entropy import as_float


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """Return `x` unchanged in the forward pass with its gradient multiplied by `scale`."""
    # x − x.detach() is exactly zero, so the forward value is x to the last bit.
    return x.detach() + (x - x.detach()) * scale


def center_loss(features: Tensor, labels: Tensor, centers: Tensor) -> Tensor:
    """Σ_i ‖x_i − c_{y_i}‖² / B.

    Args:
        features: (B, D) un-normalised features.
        labels: (B,) class labels in [0, C).
        centers: (C, D) class centres.

    Returns:
        A scalar tensor.
    """
    x = as_float(features)
    diff = x - centers[labels].to(x.dtype)  # (B, D)
    return diff.pow(2).sum() / len(x)
