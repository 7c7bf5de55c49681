"""Run logs: metrics.jsonl always; TensorBoard and Weights & Biases when the recipe asks."""

import json
import logging
import time
from pathlib import Path
from typing import Any

from reidcli.errors import ReidError
from reidcli.recipe.run import Train

log = logging.getLogger(__name__)


class Tracker:
    """Writes one JSON line per log interval and per validation (rank 0 only).

    Args:
        run_dir: the run folder.
        cfg: the recipe's train section (tensorboard, wandb).
        recipe: the resolved recipe as a dict, sent to W&B as its config.
        enabled: False on ranks other than 0.
    """

    def __init__(self, run_dir: Path, cfg: Train, recipe: dict, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tensorboard = None
        self.wandb_run = None
        if not enabled:
            return
        self.path = Path(run_dir) / "metrics.jsonl"
        if cfg.tensorboard:
            self.tensorboard = _open_tensorboard(Path(run_dir) / "tensorboard")
        if cfg.wandb is not None and cfg.wandb.mode != "disabled":
            self.wandb_run = _open_wandb(run_dir, cfg, recipe)

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """Append a record; numbers also go to TensorBoard and W&B under `kind/name`."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        numbers = {
            f"{kind}/{k}": v
            for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if self.tensorboard is not None:
            for key, value in numbers.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(numbers, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _open_tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ReidError(
            "train.tensorboard is on but the tensorboard package is missing: "
            "pip install 'reidcli[tensorboard]'"
        ) from err
    return SummaryWriter(log_dir=str(folder))


def _open_wandb(run_dir: Path, cfg: Train, recipe: dict):
    try:
        import wandb
    except ImportError as err:
        raise ReidError(
            "train.wandb is set but the wandb package is missing: pip install 'reidcli[wandb]'"
        ) from err
    return wandb.init(
        project=cfg.wandb.project,
        name=cfg.wandb.name or Path(run_dir).name,
        mode=cfg.wandb.mode,
        dir=str(run_dir),
        config=recipe,
    )
