"""LightMBN (Herzog et al. 2021): a shared trunk, global / part / channel branches, 7 BNNeck heads.

`lmbn_n` is built on OSNet x1.0, `lmbn_r` on ResNet-50. Checkpoints trained with the reference
code (jixunbo/LightMBN) import through `lightmbn_layout`, ImageNet backbones through
`imagenet_layout`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from reidcli.models.base import Layout, ReIDModel, ReIDOutput, pool2d, prefix_map
from reidcli.models.heads import BNNeck
from reidcli.models.osnet import OSBlock, build_osnet
from reidcli.models.resnet import ResNet50, resnet_branch, resnet_trunk, torchvision_branch_map

HEAD_ORDER = ("glo", "glo_drop", "g_par", "p0", "p1", "c0", "c1")
BRANCHES = ("global_branch", "part_branch", "channel_branch")

# LightMBN module name -> ours. Its reduction_0..4 are (glo, g_par, p0, p1, glo_drop); our heads
# follow the output order glo, glo_drop, g_par, p0, p1, c0, c1.
LIGHTMBN_PREFIXES = {
    "backone.": "trunk.",
    "backbone.": "trunk.",  # the spelling of some LightMBN revisions of lmbn_n.py
    "global_branch.": "global_branch.",
    "partial_branch.": "part_branch.",
    "channel_branch.": "channel_branch.",
    "batch_drop_block.drop_batch_bottleneck.": "global_block.",
    "shared.": "channel_shared.",
    "reduction_0.": "heads.0.",
    "reduction_4.": "heads.1.",  # LMBN_n's name for the glo_drop head
    "reduction_drop.": "heads.1.",  # LMBN_r's name for it
    "reduction_1.": "heads.2.",
    "reduction_2.": "heads.3.",
    "reduction_3.": "heads.4.",
    "reduction_ch_0.": "heads.5.",
    "reduction_ch_1.": "heads.6.",
}


def top_drop_rows(x: Tensor, ratio: float) -> Tensor:
    """Top-DropBlock: zero, per sample, the rows of highest activation energy.

    The energy of a row is its peak over the width of the channel-summed squared activation, as
    in LightMBN; the mask is built on the tensor's device for the whole batch at once.

    Args:
        x: (B, C, H, W) feature map.
        ratio: share of the H rows to zero (rounded, as LightMBN: 8 of 24, 4 of 12).
    """
    rows = round(ratio * x.shape[2])
    if rows == 0:
        return x
    energy = x.detach().float().pow(2).sum(1).amax(2)  # (B, H)
    top = energy.topk(rows, dim=1).indices  # (B, rows)
    keep = energy.new_ones(energy.shape).scatter_(1, top, 0.0)  # (B, H)
    return x * keep[:, None, :, None].to(x.dtype)


class LMBN(ReIDModel):
    """LightMBN on any trunk with three branch copies.

    Args:
        trunk: shared stem, (B, 3, H, W) -> (B, c, H/8, W/8).
        branches: global, part and channel branches, each -> (B, channels, H/16, W/16) (the
            global one may be half as high).
        global_block: extra block on the global branch, channels -> channels.
        channels: width of the branch maps.
        num_classes: classes of the 7 classifiers.
        feats: width of every head (and of each embedding branch).
        drop_ratio: share of rows Top-DropBlock zeroes in training.
        glo_pool: pooling of the global feature, "avg" (lmbn_n) or "max" (lmbn_r).
        cha_pool: pooling of the channel branch, "avg" (lmbn_n) or "max" (lmbn_r).
        backbone_name: which ImageNet weights `pretrained: imagenet` loads.
        imagenet_layout: how those weights map onto trunk and branches.
    """

    def __init__(
        self,
        trunk: nn.Module,
        branches: tuple[nn.Module, nn.Module, nn.Module],
        global_block: nn.Module,
        *,
        channels: int,
        num_classes: int,
        feats: int,
        drop_ratio: float,
        glo_pool: str,
        cha_pool: str,
        backbone_name: str,
        imagenet_layout: Layout,
    ):
        super().__init__()
        self.trunk = trunk
        self.global_branch, self.part_branch, self.channel_branch = branches
        self.global_block = global_block
        self.channel_shared = nn.Sequential(
            nn.Conv2d(channels // 2, feats, 1, bias=False), nn.BatchNorm2d(feats), nn.ReLU()
        )
        reduced = [BNNeck(channels, num_classes, feats, reduce=True) for _ in range(5)]
        self.heads = nn.ModuleList(
            [*reduced, BNNeck(feats, num_classes), BNNeck(feats, num_classes)]
        )
        self.drop_ratio = drop_ratio
        self.glo_pool, self.cha_pool = glo_pool, cha_pool
        self.num_classes = num_classes
        self.branch_dims = (feats,) * len(HEAD_ORDER)
        self.backbone_name = backbone_name
        self._imagenet_layout = imagenet_layout

    def weight_layouts(self) -> tuple[Layout, ...]:
        return (Layout("lightmbn", prefix_map(LIGHTMBN_PREFIXES)), self._imagenet_layout)

    def branch_vectors(self, x: Tensor) -> list[Tensor]:
        """The 7 pooled vectors in `HEAD_ORDER`, before the heads."""
        x = self.trunk(x)  # (B, 384, H/8, W/8) for OSNet
        glo = self.global_block(self.global_branch(x))  # (B, C, H/16, W/16)
        par = self.part_branch(x)  # (B, C, H/16, W/16)
        cha = pool2d(self.channel_branch(x), self.cha_pool)  # (B, C)
        glo_drop = top_drop_rows(glo, self.drop_ratio) if self.training else glo
        stripes = F.adaptive_avg_pool2d(par, (2, 1)).flatten(2)  # (B, C, 2)
        # The shared 1×1 conv runs once per half, as in LightMBN (BN statistics per call).
        c0, c1 = (
            self.channel_shared(half[:, :, None, None]).flatten(1) for half in cha.chunk(2, 1)
        )
        return [
            pool2d(glo, self.glo_pool),
            pool2d(glo_drop, "max"),
            pool2d(par, "max"),
            stripes[:, :, 0],
            stripes[:, :, 1],
            c0,
            c1,
        ]

    def forward(self, x: Tensor) -> ReIDOutput | Tensor:
        """Training: 7 logits and 3 pre-BN features; eval: (B, 7 * feats) post-BN embedding."""
        pre, post = zip(
            *(head(v) for head, v in zip(self.heads, self.branch_vectors(x), strict=True)),
            strict=True,
        )
        if not self.training:
            return torch.cat(post, 1)  # (B, 7 * feats), branch-major
        logits = [head.classifier(p) for head, p in zip(self.heads, post, strict=True)]
        return ReIDOutput(logits, list(pre[:3]), torch.cat(post, 1))


def build_lmbn_n(num_classes: int, feats: int = 512, drop_ratio: float = 0.33) -> LMBN:
    """LMBN_n: OSNet x1.0 trunk (conv1 to conv3[0]), branches conv3[1:], conv4, conv5."""
    osnet = build_osnet("osnet_x1_0")
    trunk = nn.Sequential(osnet.conv1, osnet.maxpool, osnet.conv2, osnet.conv3[0])
    # Slicing keeps the indices (1, 2) of conv3, as LightMBN's keys do.
    branch = nn.Sequential(osnet.conv3[1:], osnet.conv4, osnet.conv5)
    branches = tuple(copy.deepcopy(branch) for _ in BRANCHES)
    table = {
        "conv1.": "trunk.0.",
        "conv2.": "trunk.2.",
        "conv3.0.": "trunk.3.",
        "conv3.": [f"{b}.0." for b in BRANCHES],
        "conv4.": [f"{b}.1." for b in BRANCHES],
        "conv5.": [f"{b}.2." for b in BRANCHES],
    }
    layout = Layout(
        "torchreid_osnet", prefix_map(table, ("fc.", "classifier.")), ("trunk.", *BRANCHES)
    )
    return LMBN(
        trunk,
        branches,
        OSBlock(512, 512),
        channels=512,
        num_classes=num_classes,
        feats=feats,
        drop_ratio=drop_ratio,
        glo_pool="avg",
        cha_pool="avg",
        backbone_name="osnet_x1_0",
        imagenet_layout=layout,
    )


def build_lmbn_r(num_classes: int, feats: int = 512, drop_ratio: float = 0.33) -> LMBN:
    """LMBN_r: ResNet-50 trunk to layer3[0]; global branch keeps stride 2, the others stride 1."""
    resnet = ResNet50(last_stride=2)
    branches = (resnet_branch(resnet, 2), resnet_branch(resnet, 1), resnet_branch(resnet, 1))
    layout = Layout(
        "torchvision_resnet50",
        prefix_map(torchvision_branch_map(BRANCHES), ("fc.",)),
        ("trunk.", *BRANCHES),
    )
    return LMBN(
        resnet_trunk(resnet),
        branches,
        Bottleneck(2048, 512),
        channels=2048,
        num_classes=num_classes,
        feats=feats,
        drop_ratio=drop_ratio,
        glo_pool="max",
        cha_pool="max",
        backbone_name="resnet50",
        imagenet_layout=layout,
    )
