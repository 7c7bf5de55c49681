"""The `data` section: which prepared dataset, input size, P×K batches, augmentations."""

import typing
from typing import Literal

from pydantic import Field, model_validator

from reidcli.recipe.base import Section

DatasetName = Literal[
    "market1501",
    "dukemtmc",
    "cuhk03-np-labeled",
    "cuhk03-np-detected",
    "msmt17",
    "folder",
    "synthetic",
]
DATASETS: tuple[str, ...] = typing.get_args(DatasetName)

# The longest side a model input may have: four times Market-1501's 384-pixel reference height.
MAX_SIDE = 1536
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Crop(Section):
    """Random crop after a slight enlargement (LightMBN) or after zero padding (BoT)."""

    mode: Literal["none", "resize_crop", "pad_crop"] = "resize_crop"
    p: float = Field(0.5, ge=0, le=1, description="probability of applying the crop")
    scale: float = Field(1.05, ge=1, description="resize_crop: enlarge by this factor, then crop")
    padding: int = Field(10, ge=0, description="pad_crop: pixels of zero padding on each side")


class RandomErasing(Section):
    """Random erasing (Zhong et al. 2020) of one rectangle."""

    p: float = Field(0.5, ge=0, le=1)
    area: tuple[float, float] = Field((0.02, 0.4), description="erased share of the image")
    aspect: float = Field(0.3, gt=0, le=1, description="aspect ratios drawn in [aspect, 1/aspect]")
    fill: Literal["mean", "zero", "random"] = Field(
        "mean", description="mean: the normalisation mean (LightMBN); random: per-pixel noise"
    )

    @model_validator(mode="after")
    def _area_range(self) -> "RandomErasing":
        lo, hi = self.area
        if not 0 < lo <= hi < 1:
            raise ValueError(f"area must satisfy 0 < min <= max < 1, got {list(self.area)}")
        return self


class Cutout(Section):
    """Cutout (DeVries & Taylor 2017): zero square holes of a given side (share of height)."""

    p: float = Field(0.0, ge=0, le=1)
    holes: int = Field(1, ge=1)
    size: float = Field(0.25, gt=0, le=1, description="hole side as a share of the image height")


class Augment(Section):
    """Training augmentations; evaluation uses resize and normalisation only."""

    flip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability")
    crop: Crop = Crop()
    erasing: RandomErasing = RandomErasing()
    cutout: Cutout = Cutout()


class Data(Section):
    """A dataset prepared by `reid prepare` and how batches are drawn from it."""

    dataset: DatasetName = "market1501"
    root: str = Field("data/market1501", description="folder written by `reid prepare`")
    manifest: str | None = Field(None, description="manifest.csv path; default ROOT/manifest.csv")
    height: int = Field(384, gt=0, le=MAX_SIDE, description="input height (pixels)")
    width: int = Field(128, gt=0, le=MAX_SIDE, description="input width (pixels)")
    p: int = Field(6, ge=1, le=4096, description="identities per batch (P)")
    k: int = Field(8, ge=2, le=1024, description="images per identity in a batch (K)")
    workers: int = Field(4, ge=0, le=256, description="data-loading worker processes")
    eval_batch_size: int = Field(128, gt=0, le=65536)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    augment: Augment = Augment()

    @model_validator(mode="after")
    def _positive_std(self) -> "Data":
        if min(self.std) <= 0:
            raise ValueError(f"std values must be > 0, got {list(self.std)}")
        return self

    @property
    def batch_size(self) -> int:
        """Images per training batch (P × K)."""
        return self.p * self.k
