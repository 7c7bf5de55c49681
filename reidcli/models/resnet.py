"""ResNet-50 backbones: torchvision's implementation with a configurable last stride, and IBN-a.

Keys follow torchvision (and, for IBN-a, Pan et al.'s `bn1.IN` / `bn1.BN`), so ImageNet
checkpoints load as they are; the 1000-class `fc` is dropped.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck, ResNet


class IBN(nn.Module):
    """Instance-batch normalisation: InstanceNorm on the first half of the channels, BN on the rest.

    Args:
        planes: channels of the normalised tensor.
        ratio: share of channels that get InstanceNorm.
    """

    def __init__(self, planes: int, ratio: float = 0.5):
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: Tensor) -> Tensor:
        first, rest = x.split([self.half, x.shape[1] - self.half], 1)
        return torch.cat([self.IN(first), self.BN(rest)], 1)


class ResNet50(ResNet):
    """ResNet-50 feature extractor (no fc).

    Args:
        last_stride: stride of layer4 (2 as in ImageNet, 1 doubles the final map's height/width).
        ibn: replace bn1 of every bottleneck in layer1-3 by `IBN` (ResNet-50-IBN-a).
    """

    out_dim = 2048

    def __init__(self, last_stride: int = 2, *, ibn: bool = False):
        super().__init__(Bottleneck, [3, 4, 6, 3])
        self.fc = None
        set_stride(self.layer4, last_stride)
        if ibn:
            for layer in (self.layer1, self.layer2, self.layer3):
                for block in layer:
                    block.bn1 = IBN(block.bn1.num_features)
            # Pan et al. initialise the IN halves like BN: unit scale, zero shift.
            for m in self.modules():
                if isinstance(m, nn.InstanceNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    def feature_maps(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 2048, H/32, W/32), or H/16, W/16 with last stride 1."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 2048) average-pooled features."""
        return self.feature_maps(x).mean((2, 3))


def set_stride(layer: nn.Sequential, stride: int) -> None:
    """Sets the stride of a ResNet stage's first block (3×3 conv and downsample)."""
    block = layer[0]
    block.conv2.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def resnet_trunk(resnet: ResNet50) -> nn.Sequential:
    """The shared trunk of multi-branch models: stem to layer3[0] (1024 channels, H/16).

    Indices match LightMBN's `backone` (0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-5 layers, 6 block).
    """
    return nn.Sequential(
        resnet.conv1,
        resnet.bn1,
        resnet.relu,
        resnet.maxpool,
        resnet.layer1,
        resnet.layer2,
        resnet.layer3[0],
    )


def resnet_branch(resnet: ResNet50, last_stride: int) -> nn.Sequential:
    """A branch's own copy of layer3[1:] and layer4 with the given stride: (B, 2048, h, w)."""
    layer3_rest = nn.Sequential(*copy.deepcopy(list(resnet.layer3[1:])))
    layer4 = copy.deepcopy(resnet.layer4)
    set_stride(layer4, last_stride)
    return nn.Sequential(layer3_rest, layer4)


def torchvision_branch_map(branches: tuple[str, ...]) -> dict[str, list[str]]:
    """Prefix table from torchvision ResNet-50 keys to a trunk/branches model's keys."""
    table = {
        "conv1.": ["trunk.0."],
        "bn1.": ["trunk.1."],
        "layer1.": ["trunk.4."],
        "layer2.": ["trunk.5."],
        "layer3.0.": ["trunk.6."],
        "layer4.": [f"{b}.1." for b in branches],
    }
    for i in range(1, 6):
        table[f"layer3.{i}."] = [f"{b}.0.{i - 1}." for b in branches]
    return table
