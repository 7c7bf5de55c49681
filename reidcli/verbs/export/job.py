"""The shared state of one `reid export` run: the model, its input contract, the crops of the
parity check (and, for INT8, the calibration set)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from reidcli.errors import DatasetError
from reidcli.export.metadata import (
    InputContract,
    file_sha256,
)
from reidcli.verbs.calibrate import kept_with_checkpoint

log = logging.getLogger(__name__)

TRACE_BATCH = 2  # dynamic-batch graphs are traced at 2 and checked at 1 and 7


CHECK_BATCHES = (1, 7)


def build_job(model, rec, checkpoint: Path) -> ExportJob:
    cfg, data = rec.export, rec.data
    size = (data.height, data.width)
    contract = InputContract(size, data.mean, data.std, cfg.include_preprocessing, cfg.static_batch)
    pool, sources, inputs_from = sample_images(
        rec, size, max(*CHECK_BATCHES, cfg.static_batch or 1)
    )
    atol, min_cos = cfg.tolerance()
    sha256 = file_sha256(checkpoint)
    thresholds = kept_with_checkpoint(checkpoint, sha256, model.embedding_dim, rec.eval.distance)
    return ExportJob(
        model=model, recipe=rec, contract=contract, checkpoint=checkpoint,
        sha256=sha256, opset=cfg.opset, fp16=cfg.fp16, check=cfg.check,
        atol=atol, min_cos=min_cos, exporter=cfg.exporter, pool=pool, sources=sources,
        inputs_from=inputs_from, match_calibration=thresholds,
    )  # fmt: skip


@dataclass
class ExportJob:
    """Everything the formats of one export share: the model, its contract, the check."""

    model: torch.nn.Module
    recipe: object
    contract: InputContract
    checkpoint: Path
    sha256: str
    opset: int
    fp16: bool
    check: bool
    atol: float
    min_cos: float
    exporter: str
    pool: torch.Tensor  # (N, 3, H, W) uint8 crops for tracing and the parity check
    sources: list[str]
    inputs_from: str
    reference: np.ndarray | None = None  # (N, D) fp32 embedding of the pool, computed once
    calibration: tuple | None = None  # int8: (images, description) of the calibration crops
    # the run's distance thresholds (reid calibrate) when made with this checkpoint
    match_calibration: dict | None = None


def max_opset() -> int:
    """The newest ONNX opset torch.onnx writes (and the installed onnx knows)."""
    from torch.onnx import _constants

    newest = getattr(_constants, "ONNX_MAX_OPSET", 18)
    try:
        import onnx

        return min(newest, onnx.defs.onnx_opset_version())
    except ImportError:
        return newest


def sample_images(recipe, size: tuple[int, int], count: int):
    """`count` uint8 (3, H, W) crops resized as evaluation does, and what they are.

    Real crops from the recipe's prepared dataset (query and gallery, evenly spaced) when it is
    there; seeded random images otherwise.

    Returns:
        (count, 3, H, W) uint8 tensor, a source name per image, and a description.
    """
    from reidcli.data.dataset import load_image
    from reidcli.data.manifest import load_manifest
    from reidcli.data.transforms import build_inference_transform

    try:
        frame = load_manifest(recipe.data.root, recipe.data.manifest)
    except DatasetError as err:
        log.info("parity on synthetic images: %s", err)
        frame = None
    if frame is not None and len(frame):
        test = frame[frame["split"].isin(["query", "gallery"])]
        frame = test if len(test) else frame
        rows = np.linspace(0, len(frame) - 1, count).round().astype(int)
        paths = [str(p) for p in frame["path"].to_numpy()[rows]]
        resize = build_inference_transform(size, (0, 0, 0), (1, 1, 1), normalise=False)
        images = torch.stack([resize(load_image(p)) for p in paths])
        return images, paths, f"{len(set(paths))} crops from {recipe.data.root}"
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, *size), generator=generator, dtype=torch.uint8)
    note = f"synthetic images (no prepared dataset at {recipe.data.root})"
    return images, [f"synthetic #{i}" for i in range(count)], note


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 scaled and normalised, as the evaluation transform does."""
    return TF.normalize(TF.to_dtype(images, torch.float32, scale=True), list(mean), list(std))
