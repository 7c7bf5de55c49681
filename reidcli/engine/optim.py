"""Optimisers with parameter groups: weight decay off for norms and biases on request, and
center-loss centres updated by their own plain SGD."""

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from reidcli.engine.schedule import LRScheduler, build_scheduler
from reidcli.recipe.optim import SGD, Adam, AdamW, Optim

__all__ = ["ChainedOptimizer", "LRScheduler", "build_optimizer", "build_scheduler"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """Trainable parameters split into a decayed group and, on request, an undecayed one.

    A parameter shared by several modules is listed once; frozen parameters are left out.
    """
    decay: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            exempt = no_decay_norm_bias and (isinstance(module, _NORMS) or name == "bias")
            (plain if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0, "name": "no_decay"})
    return [g for g in groups if g["params"]]


def _make(cfg: Optim, groups: list[dict]) -> torch.optim.Optimizer:
    if isinstance(cfg, SGD):
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if isinstance(cfg, AdamW):
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    assert isinstance(cfg, Adam)
    return torch.optim.Adam(
        groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad
    )


class ChainedOptimizer(torch.optim.Optimizer):
    """Several optimisers stepped, zeroed and saved as one.

    `param_groups` is the concatenation of theirs (the same dicts), so schedulers, gradient
    clipping and `torch.amp.GradScaler.unscale_` see every group.
    """

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)
        super().__init__([g for o in self.optimizers for g in o.param_groups], {})

    def _relink(self) -> None:
        # Loading a state replaces an optimiser's group dicts; share the new ones again.
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """Step every optimiser (a closure, if any, is evaluated once, by the first)."""
        loss = None
        for i, optimizer in enumerate(self.optimizers):
            result = optimizer.step(closure if i == 0 else None)
            loss = result if i == 0 else loss
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict["optimizers"]
        if len(states) != len(self.optimizers):
            raise ValueError(
                f"state holds {len(states)} optimisers, expected {len(self.optimizers)}"
            )
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)
        self._relink()


def _trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    return [p for p in params if p.requires_grad]


def build_optimizer(
    cfg: Optim,
    model: nn.Module,
    criterion: nn.Module | None = None,
    center_lr: float | None = None,
) -> torch.optim.Optimizer:
    """The recipe's optimiser over the model, plus the criterion's parameters if it has any.

    The criterion's parameters (center-loss centres) get their own group, updated by plain SGD
    (no momentum, no weight decay) at `center_lr` (default: the criterion's `center_lr`, else
    0.5, as BoT) and marked `scheduled: False` so that the lr schedule leaves them alone; the
    result is then a `ChainedOptimizer` of the two.

    Args:
        cfg: the recipe's optim section.
        model: the bare model (not a DDP wrapper).
        criterion: the loss module, whose parameters (if any) are optimised too.
        center_lr: learning rate of the criterion's parameters.

    Returns:
        An optimiser whose groups are named "decay", "no_decay" and "centers".
    """
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_norm_bias)
    if not groups:
        raise ValueError("the model has no trainable parameter")
    main = _make(cfg, groups)
    centres = _trainable(criterion.parameters()) if criterion is not None else []
    if not centres:
        return main
    lr = center_lr or getattr(criterion, "center_lr", None) or 0.5
    group = {
        "params": centres,
        "lr": lr,
        "weight_decay": 0.0,
        "name": "centers",
        "scheduled": False,
    }
    return ChainedOptimizer([main, torch.optim.SGD([group], lr=lr, momentum=0.0)])
