"""One optimisation step: the only place where autocast, loss scaling and clipping are used."""

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from reidcli.engine.runtime import Runtime
from reidcli.errors import TrainingError


@dataclass
class StepStats:
    """Losses of one optimisation step, averaged over its micro-batches."""

    loss: float
    parts: dict[str, float] = field(default_factory=dict)
    images: int = 0


class NonFiniteLoss(TrainingError):
    """The loss (or one of its parts) became NaN or infinite."""


class TrainStep:
    """Forward, loss, backward and optimiser update over `grad_accum` micro-batches.

    Args:
        model: the (possibly DDP-wrapped) model in training mode.
        criterion: returns (total, parts) from the model output and labels.
        optimizer: updates model and criterion parameters.
        runtime: device and precision.
        grad_clip: max global gradient norm, or None.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        runtime: Runtime,
        grad_clip: float | None = None,
    ) -> None:
        self.model = model
        self.criterion = criterion
        self.optimizer = optimizer
        self.runtime = runtime
        self.grad_clip = grad_clip
        self.scaler = runtime.grad_scaler()
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        # Loss parameters (center-loss centres) live outside DDP: average their gradients here.
        self.loss_params = [p for p in criterion.parameters() if p.requires_grad]

    def __call__(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]], step: int):
        """Run one step over the micro-batches; returns `StepStats`.

        Raises:
            NonFiniteLoss: before any parameter is touched, naming the step and the loss parts.
        """
        total, parts_sum, images = 0.0, {}, 0
        count = len(micro_batches)
        for index, (images_cpu, labels_cpu) in enumerate(micro_batches):
            images_dev = self.runtime.to_device(images_cpu)
            labels = labels_cpu.to(self.runtime.device, non_blocking=True)
            # DDP all-reduces gradients only on the last micro-batch of the step.
            sync = index == count - 1 or not hasattr(self.model, "no_sync")
            ctx = contextlib.nullcontext() if sync else self.model.no_sync()
            with ctx:
                with self.runtime.autocast():
                    output = self.model(images_dev)
                    loss, parts = self.criterion(output, labels)
                values = {name: float(v.detach()) for name, v in parts.items()}
                value = float(loss.detach())
                if not math.isfinite(value) or not all(map(math.isfinite, values.values())):
                    self.optimizer.zero_grad(set_to_none=True)
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                    raise NonFiniteLoss(
                        f"non-finite loss at step {step}: loss={value:.4g} ({shown}); "
                        "the last good checkpoint is kept"
                    )
                self.scaler.scale(loss / count).backward()
            total += value / count
            for name, v in values.items():
                parts_sum[name] = parts_sum.get(name, 0.0) + v / count
            images += images_cpu.shape[0]
        if self.runtime.distributed:
            for param in self.loss_params:
                if param.grad is not None:
                    dist.all_reduce(param.grad)
                    param.grad /= self.runtime.world_size
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return StepStats(total, parts_sum, images)
