"""Learning-rate schedules as pure functions of the (fractional) epoch, stepped per epoch or
per iteration, with exact resume."""

import bisect
import math
from typing import Any

import torch

from reidcli.recipe.optim import Constant, Schedule, WarmupCosine, WarmupMultistep


def lr_factor(cfg: Schedule, epoch: float, epochs: int) -> float:
    """Multiplier of the base learning rate at a 0-based, possibly fractional, epoch.

    warmup_cosine (SPEC §6): (e + 1)/W for e < W, then r + (1 − r)(1 + cos(π(e − W)/(T − 1)))/2
    with T = epochs − W and r = min_lr_ratio, held at r past the last epoch.
    warmup_multistep: linear from warmup_factor to 1 over W epochs, then ×gamma at each
    milestone reached. constant: (e + 1)/W during warmup, then 1.

    Args:
        cfg: the recipe's schedule section.
        epoch: 0-based epoch; iteration i of an epoch of n is epoch + i/n.
        epochs: length of the run in epochs.
    """
    warm = cfg.warmup_epochs
    if isinstance(cfg, WarmupMultistep):
        ramp = cfg.warmup_factor + (1 - cfg.warmup_factor) * epoch / warm if epoch < warm else 1.0
        return ramp * cfg.gamma ** bisect.bisect_right(cfg.milestones, epoch)
    if epoch < warm:
        # At integer epochs this is SPEC's lr·(e+1)/W; between W − 1 and W it holds at 1.
        return min(1.0, (epoch + 1) / warm)
    if isinstance(cfg, Constant):
        return 1.0
    assert isinstance(cfg, WarmupCosine)
    progress = min(1.0, (epoch - warm) / max(epochs - warm - 1, 1))
    r = cfg.min_lr_ratio
    return r + (1 - r) * (1 + math.cos(math.pi * progress)) / 2


class LRScheduler:
    """Sets every scheduled parameter group's lr to its base lr × `lr_factor` at the current
    position; groups with `scheduled: False` (center-loss centres) keep their own lr.

    Attributes:
        per: "epoch" or "iteration": when the training loop calls `step()`.
        steps: `step()` calls so far; the position is steps (per epoch) or
            steps / iters_per_epoch (per iteration) epochs.
    """

    def __init__(
        self, cfg: Schedule, optimizer: torch.optim.Optimizer, *, epochs: int, iters_per_epoch: int
    ):
        if epochs < 1 or iters_per_epoch < 1:
            raise ValueError(
                f"epochs and iters_per_epoch must be >= 1, got {epochs}, {iters_per_epoch}"
            )
        self.cfg, self.optimizer = cfg, optimizer
        self.per = cfg.per
        self.epochs, self.iters_per_epoch = epochs, iters_per_epoch
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.steps = 0
        self._apply()

    @property
    def epoch(self) -> float:
        """The current position in (fractional) epochs."""
        return self.steps if self.per == "epoch" else self.steps / self.iters_per_epoch

    def lr_at(self, epoch: float, base_lr: float | None = None) -> float:
        """The lr of a group with base lr `base_lr` (default: the first group's) at `epoch`."""
        if base_lr is None:
            base_lr = self.optimizer.param_groups[0]["initial_lr"]
        return base_lr * lr_factor(self.cfg, epoch, self.epochs)

    def _apply(self) -> None:
        factor = lr_factor(self.cfg, self.epoch, self.epochs)
        for group in self.optimizer.param_groups:
            if group.get("scheduled", True):
                group["lr"] = group["initial_lr"] * factor

    def step(self) -> None:
        """Advance by one epoch or one iteration (according to `per`) and update the lrs."""
        self.steps += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The lr of every parameter group."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "per": self.per, "iters_per_epoch": self.iters_per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position (the schedule itself comes from the recipe) and apply its lrs."""
        self.steps = int(state["steps"])
        self._apply()


def build_scheduler(
    cfg: Schedule, optimizer: torch.optim.Optimizer, *, epochs: int, iters_per_epoch: int
) -> LRScheduler:
    """The recipe's schedule over `optimizer`; call `step()` once per `scheduler.per`.

    Args:
        cfg: the recipe's schedule section.
        optimizer: its groups' current lr is taken as their base lr.
        epochs: length of the run.
        iters_per_epoch: optimiser steps per epoch (used when stepping per iteration).
    """
    return LRScheduler(cfg, optimizer, epochs=epochs, iters_per_epoch=iters_per_epoch)
