"""Builds a run's parts from the recipe: model, criterion, optimiser, schedule; run files."""

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
import yaml
from torch import nn

from reidcli import __version__
from reidcli.engine.optim import build_optimizer, build_scheduler
from reidcli.engine.runtime import Runtime
from reidcli.errors import DeviceError
from reidcli.losses.criterion import build_criterion
from reidcli.models.catalog import build_model
from reidcli.outputs import write_text_atomic
from reidcli.recipe import Recipe


@dataclass
class RunParts:
    model: nn.Module  # what the step calls: possibly DDP-wrapped and compiled
    bare_model: nn.Module  # the ReIDModel itself (state dict, embed, validation)
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object


def check_runtime_options(recipe: Recipe, runtime: Runtime) -> None:
    """Refuse, before any work, an option the run's device cannot execute.

    Raises:
        DeviceError: `train.sync_bn` in a distributed run on CPU ranks (torch's SyncBatchNorm
            synchronises batch statistics on GPU modules only).
    """
    if recipe.train.sync_bn and runtime.distributed and runtime.device.type == "cpu":
        raise DeviceError(
            "train.sync_bn: SyncBatchNorm works on CUDA devices only and this run's ranks "
            "compute on the CPU; set train.sync_bn: false (each rank then normalises with its "
            "own batch statistics)"
        )


def build_parts(recipe: Recipe, data, runtime: Runtime, steps_per_epoch: int) -> RunParts:
    """Model (on device, memory format, SyncBN, DDP, compile), criterion, optimiser, schedule."""
    model = build_model(recipe.model, data.num_classes).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if runtime.distributed and recipe.train.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    bare = model
    feat_dims = feature_dims(bare, recipe, runtime)
    criterion = build_criterion(recipe.loss, data.num_classes, feat_dims).to(runtime.device)
    optimizer = build_optimizer(recipe.optim, bare, criterion)
    scheduler = build_scheduler(
        recipe.schedule, optimizer, epochs=recipe.train.epochs, iters_per_epoch=steps_per_epoch
    )
    if runtime.distributed:
        ids = [runtime.local_rank] if runtime.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if recipe.train.compile:
        model = torch.compile(model)
    return RunParts(model, bare, criterion, optimizer, scheduler)


def feature_dims(model: nn.Module, recipe: Recipe, runtime: Runtime) -> list[int]:
    """Widths of the model's metric features, read from one tiny training forward pass."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    probe = torch.zeros(2, 3, recipe.data.height, recipe.data.width, device=runtime.device)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        out = model(probe)
    model.train(was_training)
    # The probe moved BatchNorm running statistics; put back the (possibly pretrained) ones.
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    return [int(f.shape[1]) for f in out.features]


def write_run_files(run_dir: Path, recipe: Recipe, runtime: Runtime, resumed: bool = False) -> None:
    """recipe.yaml (resolved) and env.json (versions, device, command) in the run folder.

    A resumed run keeps env.json's description of the run's start and appends its own under
    `resumes`.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    env = _environment(recipe, runtime)
    path = run_dir / "env.json"
    if resumed and path.is_file():
        try:
            first = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            first = None
        if isinstance(first, dict):
            env = {**first, "resumes": [*first.get("resumes", []), env]}
    write_text_atomic(path, json.dumps(env, indent=2) + "\n")


def _environment(recipe: Recipe, runtime: Runtime) -> dict:
    return {
        "reidcli": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "device": str(runtime.device),
        "device_name": (
            torch.cuda.get_device_name(runtime.device)
            if runtime.device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "world_size": runtime.world_size,
        "amp": recipe.train.amp,
        "amp_dtype": str(runtime.amp_dtype).removeprefix("torch.") if runtime.amp_dtype else "off",
        "channels_last": runtime.channels_last,
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
