"""OSNet (Zhou et al. 2019, "Omni-Scale Feature Learning for Person Re-Identification").

Module names follow torchreid's so that the public ImageNet checkpoints
(`osnet_x1_0_imagenet.pth`, ...) load key for key.
"""

from __future__ import annotations

from torch import Tensor, nn

# Stage widths per width multiplier: conv1, conv2, conv3, conv4 outputs.
OSNET_WIDTHS = {
    "osnet_x1_0": (64, 256, 384, 512),
    "osnet_x0_75": (48, 192, 288, 384),
    "osnet_x0_5": (32, 128, 192, 256),
    "osnet_x0_25": (16, 64, 96, 128),
}


class ConvLayer(nn.Module):
    """k×k conv + BN + ReLU (the 7×7 stem)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1(nn.Module):
    """1×1 conv + BN, followed by ReLU unless `linear`."""

    def __init__(self, in_ch: int, out_ch: int, *, linear: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = None if linear else nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return x if self.relu is None else self.relu(x)


class LightConv3x3(nn.Module):
    """Lite 3×3: pointwise 1×1 then depthwise 3×3, BN, ReLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, groups=out_ch, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Unified aggregation gate: channel weights from a small MLP, shared by the four streams."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = self.fc2(self.relu(self.fc1(gate))).sigmoid()
        return x * gate


class OSBlock(nn.Module):
    """Omni-scale residual bottleneck: four streams of 1-4 lite 3×3 convs, gated and summed."""

    def __init__(self, in_ch: int, out_ch: int, bottleneck_reduction: int = 4):
        super().__init__()
        mid = out_ch // bottleneck_reduction
        self.conv1 = Conv1x1(in_ch, mid)
        self.conv2a = LightConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(4)))
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1(mid, out_ch, linear=True)
        self.downsample = Conv1x1(in_ch, out_ch, linear=True) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.conv1(x)  # (B, mid, H, W)
        streams = (self.conv2a, self.conv2b, self.conv2c, self.conv2d)
        x2 = sum(self.gate(stream(x1)) for stream in streams)
        identity = x if self.downsample is None else self.downsample(x)
        return (self.conv3(x2) + identity).relu()


def make_stage(in_ch: int, out_ch: int, *, blocks: int = 2, reduce: bool) -> nn.Sequential:
    """`blocks` OSBlocks, then (if `reduce`) a 1×1 transition and 2×2 average pooling."""
    layers: list[nn.Module] = [OSBlock(in_ch, out_ch)]
    layers += [OSBlock(out_ch, out_ch) for _ in range(blocks - 1)]
    if reduce:
        layers.append(nn.Sequential(Conv1x1(out_ch, out_ch), nn.AvgPool2d(2, stride=2)))
    return nn.Sequential(*layers)


def init_osnet(module: nn.Module) -> None:
    """torchreid's initialisation: Kaiming (fan_out) convs, unit BN, N(0, 0.01) linears."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class OSNet(nn.Module):
    """OSNet feature extractor: stem, three omni-scale stages, conv5, GAP and a 512-d fc layer.

    Args:
        widths: (stem, conv2, conv3, conv4) output channels, see `OSNET_WIDTHS`.
        feature_dim: width of the fc layer (Linear + BN + ReLU) after global average pooling.
    """

    def __init__(self, widths: tuple[int, int, int, int], feature_dim: int = 512):
        super().__init__()
        c0, c1, c2, c3 = widths
        self.out_dim = feature_dim
        self.conv1 = ConvLayer(3, c0, 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = make_stage(c0, c1, reduce=True)
        self.conv3 = make_stage(c1, c2, reduce=True)
        self.conv4 = make_stage(c2, c3, reduce=False)
        self.conv5 = Conv1x1(c3, c3)
        self.fc = nn.Sequential(
            nn.Linear(c3, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True)
        )
        init_osnet(self)

    def feature_maps(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, c3, H/16, W/16)."""
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.conv4(self.conv3(self.conv2(x))))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, feature_dim)."""
        return self.fc(self.feature_maps(x).mean((2, 3)))


def build_osnet(name: str) -> OSNet:
    """OSNet of one of the widths in `OSNET_WIDTHS`, randomly initialised."""
    return OSNet(OSNET_WIDTHS[name])
