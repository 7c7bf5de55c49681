"""The `optim` and `schedule` sections, each discriminated by `name`."""

import itertools
from typing import Annotated, Literal

from pydantic import Field, field_validator

from reidcli.recipe.base import Section


class _Optim(Section):
    name: str
    lr: float = Field(gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    no_decay_norm_bias: bool = Field(
        False, description="no weight decay on normalisation weights and biases"
    )


class SGD(_Optim):
    name: Literal["sgd"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True


class Adam(_Optim):
    name: Literal["adam"] = "adam"
    lr: float = Field(6e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    amsgrad: bool = False


class AdamW(_Optim):
    name: Literal["adamw"] = "adamw"
    lr: float = Field(6e-4, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


Optim = Annotated[SGD | Adam | AdamW, Field(discriminator="name")]


class _Schedule(Section):
    name: str
    warmup_epochs: int = Field(10, ge=0)
    per: Literal["epoch", "iteration"] = Field(
        "epoch", description="update the learning rate once per epoch or every iteration"
    )


class WarmupCosine(_Schedule):
    """Linear warmup then cosine decay to lr·min_lr_ratio (SPEC §6)."""

    name: Literal["warmup_cosine"] = "warmup_cosine"
    min_lr_ratio: float = Field(1e-3, ge=0, lt=1)


class WarmupMultistep(_Schedule):
    """Linear warmup from lr·warmup_factor, then ×gamma at each milestone epoch."""

    name: Literal["warmup_multistep"] = "warmup_multistep"
    milestones: tuple[int, ...] = (40, 70)
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_factor: float = Field(0.01, gt=0, le=1)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(b <= a for a, b in itertools.pairwise(value)) or any(m < 1 for m in value):
            raise ValueError(f"milestones must be positive and increasing, got {list(value)}")
        return value


class Constant(_Schedule):
    name: Literal["constant"] = "constant"
    warmup_epochs: int = Field(0, ge=0)


Schedule = Annotated[WarmupCosine | WarmupMultistep | Constant, Field(discriminator="name")]
