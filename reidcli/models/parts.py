"""Part-based models on ResNet-50: PCB (Sun et al. 2018) and MGN (Wang et al. 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidcli.models.base import Layout, ReIDModel, ReIDOutput, prefix_map
from reidcli.models.heads import ReductionHead
from reidcli.models.resnet import ResNet50, resnet_branch, resnet_trunk, torchvision_branch_map


class PCB(ReIDModel):
    """Part-based Convolutional Baseline: `parts` horizontal stripes, one reduced head each.

    Args:
        num_classes: classes of every stripe classifier.
        parts: number of horizontal stripes (6 in the paper).
        feats: width of each stripe's reduced feature (256 in the paper).
        last_stride: stride of layer4 (1 in the paper).
    """

    backbone_name = "resnet50"

    def __init__(self, num_classes: int, parts: int = 6, feats: int = 256, last_stride: int = 1):
        super().__init__()
        self.backbone = ResNet50(last_stride)
        self.heads = nn.ModuleList(ReductionHead(2048, feats, num_classes) for _ in range(parts))
        self.parts = parts
        self.num_classes = num_classes
        self.branch_dims = (feats,) * parts

    def weight_layouts(self) -> tuple[Layout, ...]:
        table = prefix_map({"": "backbone."}, ("fc.",))
        return (Layout("torchvision_resnet50", table, ("backbone.",)),)

    def forward(self, x: Tensor) -> ReIDOutput | Tensor:
        """Training: a logit tensor per stripe and the joined stripe features; eval: the latter."""
        maps = self.backbone.feature_maps(x)  # (B, 2048, h, w)
        stripes = F.adaptive_avg_pool2d(maps, (self.parts, 1)).flatten(2)  # (B, 2048, parts)
        feats = [head(stripes[:, :, i]) for i, head in enumerate(self.heads)]
        joined = torch.cat(feats, 1)  # (B, parts * feats)
        if not self.training:
            return joined
        logits = [head.classifier(f) for head, f in zip(self.heads, feats, strict=True)]
        return ReIDOutput(logits, [joined], joined)


MGN_BRANCHES = ("p1", "p2", "p3")


class MGN(ReIDModel):
    """Multiple Granularity Network: a global branch and branches with 2 and 3 stripes.

    8 reduced max-pooled features (3 global, 2 + 3 stripes), each with a classifier; the 3 global
    ones also go to the metric losses; the embedding concatenates all 8.

    Args:
        num_classes: classes of every classifier.
        feats: width of each reduced feature (256 in the paper).
    """

    backbone_name = "resnet50"

    def __init__(self, num_classes: int, feats: int = 256):
        super().__init__()
        resnet = ResNet50(last_stride=2)
        self.trunk = resnet_trunk(resnet)
        # p1 keeps layer4's stride 2; the part branches use stride 1 for finer stripes.
        self.p1 = resnet_branch(resnet, 2)
        self.p2 = resnet_branch(resnet, 1)
        self.p3 = resnet_branch(resnet, 1)
        self.heads = nn.ModuleList(ReductionHead(2048, feats, num_classes) for _ in range(8))
        self.num_classes = num_classes
        self.branch_dims = (feats,) * 8

    def weight_layouts(self) -> tuple[Layout, ...]:
        table = prefix_map(torchvision_branch_map(MGN_BRANCHES), ("fc.",))
        return (Layout("torchvision_resnet50", table, ("trunk.", *MGN_BRANCHES)),)

    def forward(self, x: Tensor) -> ReIDOutput | Tensor:
        """Training: 8 logits and 3 global features; eval: (B, 8 * feats) embedding."""
        x = self.trunk(x)  # (B, 1024, H/16, W/16)
        p1, p2, p3 = self.p1(x), self.p2(x), self.p3(x)  # (B, 2048, h, w)
        vectors = [m.amax((2, 3)) for m in (p1, p2, p3)]
        for branch, n in ((p2, 2), (p3, 3)):
            stripes = F.adaptive_max_pool2d(branch, (n, 1)).flatten(2)  # (B, 2048, n)
            vectors += stripes.unbind(2)
        feats = [head(v) for head, v in zip(self.heads, vectors, strict=True)]
        if not self.training:
            return torch.cat(feats, 1)
        logits = [head.classifier(f) for head, f in zip(self.heads, feats, strict=True)]
        return ReIDOutput(logits, feats[:3], torch.cat(feats, 1))
