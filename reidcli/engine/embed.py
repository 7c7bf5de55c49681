"""`reid embed`: images, or a prepared dataset's query and gallery, through any model backend.

A checkpoint, an ONNX file and a TorchScript file all receive batches made by the same
preprocessing (`build_inference_transform` with the model's `InputContract`), so the features of
a deployed file are comparable with those `reid eval` computes from its checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reidcli.data.dataset import load_image
from reidcli.data.transforms import build_inference_transform
from reidcli.devices import check_device
from reidcli.errors import CheckpointError, DatasetError, RecipeError
from reidcli.export.metadata import InputContract
from reidcli.export.runners import (
    Runner,
    is_torchscript,
    load_checkpoint_runner,
    load_exported_runner,
)
from reidcli.outputs import atomic_path, check_output_file
from reidcli.recipe.data import MAX_SIDE
from reidcli.reporting import Reporter

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
EXPORT_BATCH = 32
MAX_BATCH, MAX_WORKERS = 4096, 256  # as the recipe's eval_batch_size and workers
SHOWN = 10


def embed_images(
    model,
    inputs: tuple = (),
    *,
    dataset=None,
    out=None,
    batch_size=None,
    device="auto",
    workers=None,
    strict=False,
    size=None,
    mean=None,
    std=None,
    recipe=None,
    reporter: Reporter | None = None,
) -> dict:
    """See `reidcli.api.embed`."""
    if bool(inputs) == (dataset is not None):
        raise RecipeError("give images/folders/lists to embed, or --dataset DATA_DIR, not both")
    if batch_size is not None and not 1 <= batch_size <= MAX_BATCH:
        raise RecipeError(f"--batch must be in 1..{MAX_BATCH}, got {batch_size}")
    if workers is not None and not 0 <= workers <= MAX_WORKERS:
        raise RecipeError(f"--workers must be in 0..{MAX_WORKERS}, got {workers}")
    check_device(device)
    out = check_output_file(out if out is not None else "features.npz", "features file")
    reporter = reporter or Reporter()
    runner, defaults = load_runner(model, device, _override(size, mean, std), recipe)
    batch_size = _batch_size(runner, batch_size, defaults[0])
    workers = defaults[1] if workers is None else workers
    stated = {} if defaults[2] is None else {"distance": np.asarray(defaults[2])}
    started = time.perf_counter()
    if dataset is not None:
        result = _embed_dataset(runner, Path(dataset), out, batch_size, workers, reporter)
    else:
        paths = collect_inputs(inputs)
        feats, kept, skipped = run_images(runner, paths, batch_size, workers, strict, reporter)
        paths = np.asarray(kept, dtype=str)
        _save(out, lambda tmp: _savez(tmp, features=feats, paths=paths, **stated))
        result = {"num_images": len(kept), "embedding_dim": int(feats.shape[1]),
                  "skipped": skipped}  # fmt: skip
    seconds = time.perf_counter() - started
    return {
        "out": str(out),
        "model": str(runner.source),
        "backend": runner.backend,
        **result,
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "images_per_second": round(result["num_images"] / max(seconds, 1e-9), 2),
    }


def load_runner(model, device: str, override: InputContract | None, recipe) -> tuple:
    """The runner of MODEL and its defaults: (batch size, workers, distance of its recipe's
    evaluation; None for an exported file).

    Raises:
        CheckpointError: MODEL does not exist or cannot be loaded.
        RecipeError: --size/--mean/--std or --recipe where they do not apply.
    """
    path = Path(model)
    if not path.exists():
        raise CheckpointError(f"{path}: no such run folder, checkpoint or exported model")
    exported = path.is_file() and (path.suffix.lower() == ".onnx" or is_torchscript(path))
    if not exported:
        if override is not None:
            raise RecipeError(
                "--size/--mean/--std describe exported files without metadata; a checkpoint's "
                "preprocessing comes from its recipe"
            )
        runner, rec = load_checkpoint_runner(path, recipe, device)
        return runner, (rec.data.eval_batch_size, rec.data.workers, rec.eval.distance)
    if recipe is not None:
        raise RecipeError("--recipe applies to checkpoints; an exported file carries its metadata")
    defaults = (EXPORT_BATCH, min(2, os.cpu_count() or 1), None)
    return load_exported_runner(path, device, override), defaults


def _override(size, mean, std) -> InputContract | None:
    given = {"--size": size, "--mean": mean, "--std": std}
    if all(v is None for v in given.values()):
        return None
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise RecipeError(f"--size, --mean and --std go together; missing {', '.join(missing)}")
    if len(size) != 2 or not 1 <= min(size) <= max(size) <= MAX_SIDE:
        raise RecipeError(f"--size must be HEIGHTxWIDTH with sides in 1..{MAX_SIDE}, got {size}")
    for name, values in (("--mean", mean), ("--std", std)):
        if len(values) != 3:
            raise RecipeError(f"{name} needs three values (R,G,B), got {len(values)}")
        if not all(math.isfinite(v) for v in values):
            raise RecipeError(f"{name} values must be finite numbers, got {list(values)}")
    if min(std) <= 0:
        raise RecipeError(f"--std values must be > 0, got {list(std)}")

    return InputContract(tuple(size), tuple(mean), tuple(std))


def _batch_size(runner: Runner, asked: int | None, default: int) -> int:
    static = runner.contract.static_batch
    if static is not None:
        if asked is not None and asked != static:
            raise RecipeError(f"{runner.source} takes batches of exactly {static}; drop --batch")
        return static
    return asked or default


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


def _embed_dataset(runner, root: Path, out: Path, batch_size, workers, reporter) -> dict:
    """Query and gallery of a prepared dataset to a features file for `reid eval --features`."""
    from reidcli.data.manifest import load_manifest
    from reidcli.metrics.features import save_features

    frame = load_manifest(root)
    query = frame[frame["split"] == "query"].reset_index(drop=True)
    gallery = frame[frame["split"] == "gallery"].reset_index(drop=True)
    if query.empty or gallery.empty:
        raise DatasetError(f"{root}: the manifest has no query/gallery images")
    # Every row must be embedded (strict) for the features to line up with the manifest; query
    # and gallery run separately, as `reid eval` runs them.
    qf, _, _ = run_images(runner, list(query["path"]), batch_size, workers, True, reporter)
    gf, _, _ = run_images(runner, list(gallery["path"]), batch_size, workers, True, reporter)

    def write(tmp: Path) -> None:
        save_features(
            tmp, qf, gf, query["pid"].to_numpy(np.int64), gallery["pid"].to_numpy(np.int64),
            query["camid"].to_numpy(np.int64), gallery["camid"].to_numpy(np.int64),
            query["path"].to_numpy(str), gallery["path"].to_numpy(str),
        )  # fmt: skip

    _save(out, write)
    return {
        "num_images": len(query) + len(gallery),
        "num_query": len(query),
        "num_gallery": len(gallery),
        "embedding_dim": int(qf.shape[1]),
        "skipped": [],
    }


def _save(out: Path, write) -> None:
    """Call `write(tmp)` for a temporary file beside `out`, then rename it into place."""
    with atomic_path(out) as tmp:
        write(tmp)


def _savez(path: Path, **arrays) -> None:
    with path.open("wb") as handle:  # a handle: np.savez would append .npz to a name
        np.savez(handle, **arrays)
