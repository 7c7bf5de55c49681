"""The one `Recipe` model and its cross-field checks."""

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from reidcli.recipe.adapt import Adapt
from reidcli.recipe.base import Section
from reidcli.recipe.data import Data
from reidcli.recipe.loss import METRIC_TERMS, CrossEntropy, LossTerm, parse_loss_string
from reidcli.recipe.model import MIN_INPUT_SIDE, Model
from reidcli.recipe.optim import Adam, Optim, Schedule, WarmupCosine
from reidcli.recipe.run import Bench, Eval, Export, Train


class Recipe(Section):
    """A complete, validated description of a run: data, model, loss, optimisation, evaluation."""

    version: Literal[1] = 1
    data: Data = Data()
    model: Model = Model()
    loss: tuple[LossTerm, ...] = Field((CrossEntropy(),), min_length=1)
    optim: Optim = Adam()
    schedule: Schedule = WarmupCosine()
    train: Train = Train()
    eval: Eval = Eval()
    export: Export = Export()
    bench: Bench = Bench()
    adapt: Adapt | None = Field(
        None, description="reid adapt: unsupervised adaptation to new cameras (unused by train)"
    )

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_string(cls, value: Any) -> Any:
        return parse_loss_string(value) if isinstance(value, str) else value

    @field_validator("optim", "schedule", mode="before")
    @classmethod
    def _default_name(cls, value: Any, info) -> Any:
        # `--set schedule.warmup_epochs=5` on a recipe without a schedule keeps the default kind.
        if isinstance(value, dict) and "name" not in value:
            default = cls.model_fields[info.field_name].default
            return {"name": default.name, **value}
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        smallest = MIN_INPUT_SIDE[self.model.name]
        if min(self.data.height, self.data.width) < smallest:
            raise ValueError(
                f"{self.model.name} needs inputs of at least {smallest}x{smallest} pixels, got "
                f"data.height {self.data.height} x data.width {self.data.width}"
            )
        names = [term.name for term in self.loss]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"loss terms appear more than once: {', '.join(duplicated)}")
        metric = [n for n in names if n in METRIC_TERMS and n != "center"]
        if metric and self.data.p < 2:
            raise ValueError(f"data.p must be >= 2 when a metric loss is used ({metric[0]})")
        epochs = self.train.epochs
        if self.schedule.warmup_epochs >= epochs and self.schedule.name != "constant":
            raise ValueError(
                f"schedule.warmup_epochs ({self.schedule.warmup_epochs}) must be smaller than "
                f"train.epochs ({epochs})"
            )
        if self.schedule.name == "warmup_cosine" and epochs - self.schedule.warmup_epochs < 2:
            raise ValueError("warmup_cosine needs at least 2 epochs after the warmup")
        if self.schedule.name == "warmup_multistep" and any(
            m >= epochs for m in self.schedule.milestones
        ):
            raise ValueError(f"schedule.milestones must be below train.epochs ({epochs})")
        if self.adapt is not None and self.schedule.per != "epoch":
            raise ValueError(
                "adapt: set schedule.per to epoch (the clustering sets how many steps an epoch "
                "has, so the schedule advances once per epoch)"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain JSON-compatible data (YAML keys, every default filled)."""
        return self.model_dump(mode="json", by_alias=True)
