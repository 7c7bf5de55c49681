"""Training and evaluation transforms (torchvision.transforms.v2) on decoded uint8 images."""

from typing import Any

import torch
from torchvision.transforms import v2

from reidcli.recipe.data import Crop, Data, RandomErasing


class CutoutHoles(v2.Transform):
    """Cutout (DeVries & Taylor 2017): with probability `p`, zero `holes` squares of side
    `size`·H whose centres fall anywhere in the image (squares are clipped at the border).

    Applied after normalisation, zero is the dataset mean colour, as in the original method.
    """

    def __init__(self, p: float, holes: int, size: float):
        super().__init__()
        self.p, self.holes, self.size = p, holes, size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if torch.rand(()) >= self.p:
            return {"mask": None}
        height, width = v2.query_size(flat_inputs)
        side = max(1, round(self.size * height))
        # (holes, 1) top-left corners of squares centred anywhere in the image.
        top = torch.randint(height, (self.holes, 1)) - side // 2
        left = torch.randint(width, (self.holes, 1)) - side // 2
        y, x = torch.arange(height), torch.arange(width)
        rows = (y >= top) & (y < top + side)  # (holes, H)
        cols = (x >= left) & (x < left + side)  # (holes, W)
        mask = (rows[:, :, None] & cols[:, None, :]).any(0)  # (H, W)
        return {"mask": mask}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["mask"] is None:
            return inpt
        return inpt.masked_fill(params["mask"], 0)


def _crop(cfg: Crop, height: int, width: int) -> v2.Transform:
    """Resize to (height, width), with probability cfg.p through a random crop."""
    resize = v2.Resize((height, width), antialias=True)
    if cfg.mode == "none" or cfg.p == 0:
        return resize
    if cfg.mode == "resize_crop":
        # Resize straight to the enlarged size (one interpolation), then crop back.
        big = (round(height * cfg.scale), round(width * cfg.scale))
        cropped = v2.Compose([v2.Resize(big, antialias=True), v2.RandomCrop((height, width))])
        return v2.RandomChoice([resize, cropped], p=[1 - cfg.p, cfg.p])
    padded = v2.Compose([v2.Pad(cfg.padding), v2.RandomCrop((height, width))])
    return v2.Compose([resize, v2.RandomApply([padded], p=cfg.p)])


def _erasing(cfg: RandomErasing, mean: tuple, std: tuple) -> v2.Transform:
    """Random erasing in normalised space; `fill` says what colour the rectangle gets."""
    if cfg.fill == "mean":
        value: Any = 0.0  # the normalisation mean colour is 0 after normalisation
    elif cfg.fill == "zero":
        value = [-m / s for m, s in zip(mean, std, strict=True)]  # black before normalisation
    else:
        value = "random"
    return v2.RandomErasing(
        p=cfg.p, scale=cfg.area, ratio=(cfg.aspect, 1 / cfg.aspect), value=value
    )


def _normalise(cfg: Data) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)]


def build_train_transform(cfg: Data) -> v2.Compose:
    """Training transform: resize/crop, flip, normalise, random erasing, cutout.

    Args:
        cfg: the recipe's data section.

    Returns:
        A callable mapping a (3, H, W) uint8 image tensor to a (3, height, width) float32 tensor.
    """
    aug = cfg.augment
    steps: list[v2.Transform] = [_crop(aug.crop, cfg.height, cfg.width)]
    if aug.flip > 0:
        steps.append(v2.RandomHorizontalFlip(aug.flip))
    steps += _normalise(cfg)
    if aug.erasing.p > 0:
        steps.append(_erasing(aug.erasing, cfg.mean, cfg.std))
    if aug.cutout.p > 0:
        steps.append(CutoutHoles(aug.cutout.p, aug.cutout.holes, aug.cutout.size))
    return v2.Compose(steps)


def build_eval_transform(cfg: Data) -> v2.Compose:
    """Evaluation transform without randomness: resize and normalise.

    Args:
        cfg: the recipe's data section.

    Returns:
        A callable mapping a (3, H, W) uint8 image tensor to a (3, height, width) float32 tensor.
    """
    return build_inference_transform((cfg.height, cfg.width), cfg.mean, cfg.std)


def build_inference_transform(
    size: tuple[int, int], mean: tuple, std: tuple, *, normalise: bool = True
) -> v2.Compose:
    """The one preprocessing of evaluation, `reid embed` and export parity checks.

    Bilinear resize with antialiasing to `size` (height, width), then scaling to [0, 1] and
    normalisation with `mean`/`std`, unless `normalise` is False (a model that takes uint8 and
    normalises inside its graph).

    Returns:
        A callable mapping a (3, H, W) uint8 image tensor to a (3, height, width) float32 tensor,
        or a uint8 one without `normalise`.
    """
    steps: list[v2.Transform] = [v2.Resize(tuple(size), antialias=True)]
    if normalise:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)
