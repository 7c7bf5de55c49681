"""The embedding loop every verb shares: image paths in, (N, D) features out, through any runner.

Images are decoded and prepared by the one preprocessing of the runner's `InputContract`, in
loader worker processes; an unreadable image is skipped (or refused) with its reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reidcli.data.dataset import load_image
from reidcli.data.transforms import build_inference_transform
from reidcli.errors import DatasetError
from reidcli.inference.runners import Runner
from reidcli.reporting import Reporter

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SHOWN = 10


def collect_inputs(inputs: tuple) -> list[str]:
    """Image paths from image files, folders (recursively, sorted) and list files, in order.

    A list file holds one path per line (blank lines and `#` comments skipped); relative paths
    that do not exist from the working folder are taken relative to the list's folder.

    Raises:
        DatasetError: an input that does not exist or is not readable, or no image at all.
    """
    paths: list[str] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            paths += [str(p) for p in found if p.is_file()]
        elif item.suffix.lower() in IMAGE_SUFFIXES and item.is_file():
            paths.append(str(item))
        elif item.is_file():
            paths += _read_list(item)
        else:
            raise DatasetError(f"{item}: no such image, folder or list file")
    if not paths:
        names = ", ".join(str(i) for i in inputs)
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {names}")
    return paths


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except (UnicodeDecodeError, OSError) as err:
        raise DatasetError(
            f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}) nor a text list of paths ({err})"
        ) from None
    entries = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return [e if Path(e).is_absolute() or Path(e).exists() else str(path.parent / e)
            for e in entries]  # fmt: skip


class _Images(Dataset):
    """Paths as preprocessed images; an unreadable one yields its error instead of failing."""

    def __init__(self, paths: list[str], transform):
        self.paths = np.asarray(paths, dtype=np.str_)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, self.transform(load_image(str(self.paths[index]))), None
        except DatasetError as err:
            return index, None, str(err)


def _collate(items):
    good = [(i, image) for i, image, error in items if error is None]
    failed = [(i, error) for i, _, error in items if error is not None]
    images = torch.stack([image for _, image in good]) if good else None
    return [i for i, _ in good], images, failed


def run_images(
    runner: Runner,
    paths: list[str],
    batch_size: int,
    workers: int,
    strict: bool,
    reporter: Reporter,
) -> tuple[np.ndarray, list[str], list[dict]]:
    """Embed `paths` in order, skipping (or, with `strict`, refusing) unreadable images.

    Returns:
        (N, D) float32 features of the readable images, their paths, and the skipped ones
        ({"path", "error"}).

    Raises:
        DatasetError: with `strict`, the first batch holding unreadable images (they are named);
            or when no image could be read.
    """
    contract = runner.contract
    transform = build_inference_transform(
        contract.size, contract.mean, contract.std, normalise=not contract.in_graph
    )
    loader = DataLoader(
        _Images(paths, transform), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_collate,
    )  # fmt: skip
    chunks, kept, skipped = [], [], []
    reporter.start("embedding", len(paths))
    try:
        for indices, images, failed in loader:
            skipped += [{"path": paths[i], "error": error} for i, error in failed]
            if failed and strict:
                raise DatasetError(
                    "unreadable images (--strict): " + "; ".join(e for _, e in failed[:SHOWN])
                )
            if images is not None:
                chunks.append(_run_padded(runner, images))
                kept += [paths[i] for i in indices]
            reporter.advance(len(indices) + len(failed))
    finally:
        reporter.finish(f"embedded {len(kept)} of {len(paths)} images")
    if not chunks:
        reasons = "; ".join(item["error"] for item in skipped[:SHOWN])
        more = f" (and {len(skipped) - SHOWN} more)" if len(skipped) > SHOWN else ""
        raise DatasetError(f"none of the {len(paths)} images could be read: {reasons}{more}")
    return np.concatenate(chunks).astype(np.float32, copy=False), kept, skipped


def _run_padded(runner: Runner, images: torch.Tensor) -> np.ndarray:
    """Run a batch; a fixed-batch file gets a short last batch padded with its last image."""
    static, count = runner.contract.static_batch, images.shape[0]
    if static is not None and count < static:
        images = torch.cat([images, images[-1:].expand(static - count, *images.shape[1:])])
    return runner(images)[:count]
