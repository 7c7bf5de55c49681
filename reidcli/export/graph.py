"""The module an exported file computes: the input contract in front of `model.embed`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reidcli.models.base import ReIDModel


class EmbeddingGraph(nn.Module):
    """`model.embed` behind the documented input contract, as traced by the exporters.

    The default input is (N, 3, H, W) float32 RGB already scaled to [0, 1] and normalised with
    `mean`/`std`; with `uint8_input` it is (N, 3, H, W) uint8 RGB, scaled and normalised here, so
    that a caller cannot normalise twice. The output is the (N, D) float32 embedding that
    evaluation scores (flip TTA and normalisation as the recipe's `eval` section says).

    Args:
        model: a catalog model in eval mode (fp32).
        flip: add the embedding of the horizontally flipped images.
        normalize: none, per_branch or whole (see `ReIDModel.embed`).
        mean, std: the recipe's normalisation, used only with `uint8_input`.
        uint8_input: take uint8 images and scale and normalise inside the graph.
        fp16: run the model in float16 (weights and activations); input and output stay as above.
    """

    def __init__(
        self,
        model: ReIDModel,
        *,
        flip: bool,
        normalize: str,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        uint8_input: bool = False,
        fp16: bool = False,
    ):
        super().__init__()
        self.model = model.half() if fp16 else model
        self.flip, self.normalize = flip, normalize
        self.uint8_input, self.fp16 = uint8_input, fp16
        # (1, 3, 1, 1) so that they broadcast over (N, 3, H, W)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        x = images
        if self.uint8_input:
            # The evaluation transform's arithmetic: x * (1/255), then (x - mean) / std.
            x = (x.float() * (1.0 / 255.0) - self.mean) / self.std
        if self.fp16:
            x = x.half()
        return self.model.embed(x, flip=self.flip, normalize=self.normalize).float()
