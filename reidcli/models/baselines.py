"""Single-branch baselines: a backbone's pooled feature through a BNNeck (osnet_*, resnet50*, BoT).

BoT (Luo et al. 2019, "Bag of Tricks and a Strong Baseline") is this model on ResNet-50 with last
stride 1; the metric losses see the pooled feature before BN, the embedding is the one after.
"""

from __future__ import annotations

from torch import Tensor, nn

from reidcli.models.base import Layout, ReIDModel, ReIDOutput, prefix_map
from reidcli.models.heads import BNNeck
from reidcli.models.osnet import build_osnet
from reidcli.models.resnet import ResNet50


class BackboneBNNeck(ReIDModel):
    """A backbone returning (B, D) vectors, followed by one BNNeck head.

    Args:
        backbone: module with `out_dim`, mapping (B, 3, H, W) to (B, out_dim).
        num_classes: classifier outputs.
        backbone_name: which ImageNet weights `pretrained: imagenet` loads.
        imagenet_layout: how those weights map onto `backbone`.
    """

    def __init__(
        self, backbone: nn.Module, num_classes: int, *, backbone_name: str, imagenet_layout: Layout
    ):
        super().__init__()
        self.backbone = backbone
        self.head = BNNeck(backbone.out_dim, num_classes)
        self.num_classes = num_classes
        self.branch_dims = (backbone.out_dim,)
        self.backbone_name = backbone_name
        self._imagenet_layout = imagenet_layout

    def weight_layouts(self) -> tuple[Layout, ...]:
        return (self._imagenet_layout,)

    def forward(self, x: Tensor) -> ReIDOutput | Tensor:
        """Training: one logit tensor and the pre-BN feature; eval: (B, D) post-BN embedding."""
        pre, post = self.head(self.backbone(x))
        if not self.training:
            return post
        return ReIDOutput([self.head.classifier(post)], [pre], post)


def build_osnet_baseline(name: str, num_classes: int) -> BackboneBNNeck:
    """OSNet of width `name` (e.g. "osnet_x0_5") with a BNNeck on its 512-d fc feature."""
    layout = Layout(
        "torchreid_osnet", prefix_map({"": "backbone."}, ("classifier.",)), ("backbone.",)
    )
    return BackboneBNNeck(
        build_osnet(name), num_classes, backbone_name=name, imagenet_layout=layout
    )


def build_resnet_baseline(num_classes: int, last_stride: int, *, ibn: bool = False):
    """ResNet-50 (or ResNet-50-IBN-a) with a BNNeck on its 2048-d pooled feature."""
    name = "resnet50_ibn_a" if ibn else "resnet50"
    layout = Layout(name, prefix_map({"": "backbone."}, ("fc.",)), ("backbone.",))
    return BackboneBNNeck(
        ResNet50(last_stride, ibn=ibn), num_classes, backbone_name=name, imagenet_layout=layout
    )
