"""Feature extraction with `model.embed`, the single definition of the embedding."""

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from reidcli.data.loaders import clean_errors
from reidcli.engine.runtime import Runtime


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    loader,
    runtime: Runtime,
    *,
    flip: bool,
    normalize: str,
    progress=None,
) -> np.ndarray:
    """Embed every image of an ordered loader.

    Args:
        model: a `ReIDModel` (not wrapped in DDP).
        loader: yields `ImageDataset` batches (dicts with a (B, 3, H, W) "image").
        runtime: device and autocast.
        flip: add the features of the horizontally flipped images.
        normalize: none, per_branch or whole (see `ReIDModel.embed`).
        progress: optional callable advanced with the number of images of each batch.

    Returns:
        (N, E) float32 features in the loader's order.
    """
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for batch in clean_errors(loader):
            images = batch["image"]
            with runtime.autocast():
                out = model.embed(runtime.to_device(images), flip=flip, normalize=normalize)
            chunks.append(out.float().cpu())
            if progress is not None:
                progress(images.shape[0])
    finally:
        model.train(was_training)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(chunks).numpy()


def gather_rows(local: np.ndarray, indices: np.ndarray, total: int, runtime: Runtime) -> np.ndarray:
    """Reassemble rows that the ranks extracted for their own `indices` (rank::world_size).

    Every rank receives the full (total, E) array.
    """
    if not runtime.distributed:
        return local
    parts: list = [None] * runtime.world_size
    dist.all_gather_object(parts, (indices, local))
    width = next(p[1].shape[1] for p in parts if p[1].size)
    out = np.zeros((total, width), dtype=np.float32)
    for idx, rows in parts:
        if len(idx):
            out[idx] = rows
    return out
