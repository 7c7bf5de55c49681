"""Classification heads: BNNeck (Luo et al. 2019) and the conv-BN-ReLU reduction of PCB/MGN."""

from __future__ import annotations

from torch import Tensor, nn

from reidcli.models.base import init_classifier


class BNNeck(nn.Module):
    """Optional 1×1 reduction, BatchNorm1d with a frozen zero bias, bias-free classifier.

    The metric losses see the feature before BN, the classifier and the embedding the one after.
    The reduction is a 1×1 convolution (not a Linear) so LightMBN's `reduction.weight` loads as is.

    Args:
        in_dim: width of the pooled input vector.
        num_classes: classifier outputs.
        feat_dim: output width; a reduction is added when it differs from `in_dim` or when
            `reduce` is set.
        reduce: force the 1×1 reduction even when the widths agree (LightMBN does).
    """

    def __init__(self, in_dim: int, num_classes: int, feat_dim: int | None = None, *, reduce=False):
        super().__init__()
        feat_dim = feat_dim or in_dim
        self.reduction = (
            nn.Conv2d(in_dim, feat_dim, 1, bias=False) if reduce or feat_dim != in_dim else None
        )
        self.bn = nn.BatchNorm1d(feat_dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(feat_dim, num_classes, bias=False)
        init_classifier(self.classifier)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Maps (B, in_dim) to (pre-BN, post-BN) features, each (B, feat_dim)."""
        if self.reduction is not None:
            x = self.reduction(x[:, :, None, None]).flatten(1)
        return x, self.bn(x)


class ReductionHead(nn.Module):
    """1×1 conv + BN + ReLU to `feat_dim`, then a linear classifier (PCB and MGN heads).

    Args:
        in_dim: width of the pooled input vector.
        feat_dim: width of the reduced feature.
        num_classes: classifier outputs.
    """

    def __init__(self, in_dim: int, feat_dim: int, num_classes: int):
        super().__init__()
        self.reduction = nn.Sequential(
            nn.Conv2d(in_dim, feat_dim, 1, bias=False), nn.BatchNorm2d(feat_dim), nn.ReLU()
        )
        nn.init.kaiming_normal_(self.reduction[0].weight, mode="fan_in")
        self.classifier = nn.Linear(feat_dim, num_classes)
        nn.init.kaiming_normal_(self.classifier.weight, mode="fan_out")
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Maps (B, in_dim) to the reduced (B, feat_dim) feature."""
        return self.reduction(x[:, :, None, None]).flatten(1)
