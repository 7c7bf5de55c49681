"""The `model` section."""

import typing
from typing import Literal

from pydantic import Field, field_validator

from reidcli.recipe.base import Section

ModelName = Literal[
    "lmbn_n",
    "lmbn_r",
    "osnet_x1_0",
    "osnet_x0_75",
    "osnet_x0_5",
    "osnet_x0_25",
    "resnet50",
    "resnet50_ibn_a",
    "bot_r50",
    "pcb",
    "mgn",
]
MODELS: tuple[str, ...] = typing.get_args(ModelName)

# The smallest input side each model computes with (pixels): OSNet's pooling stages leave no
# row below 13, IBN-a's instance normalisation needs more than one value per channel at stride
# 16. The others compute at any size (not that tiny inputs make sense). tests/test_models.py
# runs every model at its minimum and one pixel below it.
MIN_INPUT_SIDE = {name: 1 for name in MODELS} | {
    "lmbn_n": 13,
    "osnet_x1_0": 13,
    "osnet_x0_75": 13,
    "osnet_x0_5": 13,
    "osnet_x0_25": 13,
    "resnet50_ibn_a": 17,
}


class Model(Section):
    """Which network to build and where its initial weights come from."""

    name: ModelName = Field("lmbn_n", description="catalog model")
    feats: int = Field(512, gt=0, le=65536, description="width of each embedding branch")
    pretrained: str = Field(
        "none",
        description="none | imagenet | path to a .pth/.pt file (ImageNet, LightMBN, reid weights)",
    )
    last_stride: Literal[1, 2] | None = Field(
        None, description="stride of the backbone's last stage; None keeps the model's default"
    )
    parts: int = Field(6, ge=1, description="pcb: number of horizontal stripes")
    drop_ratio: float = Field(
        0.33, ge=0, lt=1, description="lmbn: share of rows Top-DropBlock zeroes in training"
    )

    @field_validator("pretrained")
    @classmethod
    def _nonempty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("pretrained must be 'none', 'imagenet' or a file path")
        return value
