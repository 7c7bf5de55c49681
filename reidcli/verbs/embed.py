"""`reid embed`: images, or a prepared dataset's query and gallery, through any model backend.

A checkpoint, an ONNX file and a TorchScript file all receive batches made by the same
preprocessing (`build_inference_transform` with the model's `InputContract`), so the features of
a deployed file are comparable with those `reid eval` computes from its checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np

from reidcli.devices import check_device
from reidcli.errors import DatasetError, OutputError, RecipeError
from reidcli.index.inputs import PARTS
from reidcli.inference.images import collect_inputs, run_images
from reidcli.inference.runners import Runner, load_runner
from reidcli.metrics.features import MODEL_KEY
from reidcli.outputs import atomic_path, check_output_file, write_text_atomic
from reidcli.recipe.options import EmbedOptions
from reidcli.reporting import Reporter
from reidcli.results import EmbedResult, SkippedImage
from reidcli.verbs.calibrate import runner_model

log = logging.getLogger(__name__)


def embed(model, inputs: tuple, options: EmbedOptions, reporter: Reporter) -> EmbedResult:
    """See `reidcli.api.embed`."""
    if bool(inputs) == (options.dataset is not None):
        raise RecipeError("give images/folders/lists to embed, or dataset DATA_DIR, not both")
    check_device(options.device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _embed_sharded(model, inputs, options, reporter)
    out = check_output_file(options.out, "features file")
    paths = collect_inputs(inputs) if options.dataset is None else None
    count = len(paths) if paths is not None else _dataset_size(Path(options.dataset))
    runner, batch_size, workers, stated = _runner(model, options, count, reporter)
    model_sha256 = runner_model(runner)
    started = time.perf_counter()
    if options.dataset is not None:
        counts = _embed_dataset(
            runner, Path(options.dataset), out, batch_size, workers, reporter, model_sha256
        )
        num_images, dim, skipped = counts["num_query"] + counts["num_gallery"], counts["dim"], []
    else:
        assert paths is not None
        feats, kept, skipped = run_images(
            runner, paths, batch_size, workers, options.strict, reporter
        )
        kept_paths = np.asarray(kept, dtype=str)
        _save_arrays(out, features=feats, paths=kept_paths, **stated)
        num_images, dim, counts = len(kept), int(feats.shape[1]), {}
    seconds = time.perf_counter() - started
    return EmbedResult(
        out=str(out), model=str(runner.source), backend=runner.backend, num_images=num_images,
        embedding_dim=dim, skipped=tuple(SkippedImage(s["path"], s["error"]) for s in skipped),
        batch_size=batch_size, seconds=round(seconds, 3),
        images_per_second=round(num_images / max(seconds, 1e-9), 2),
        num_query=counts.get("num_query"), num_gallery=counts.get("num_gallery"),
    )  # fmt: skip


PART = re.compile(r"part-\d{5}-of-\d{5}\.npz|\..*\.tmp")  # parts, and killed writes of them


def _embed_sharded(model, inputs: tuple, options: EmbedOptions, reporter) -> EmbedResult:
    """Under torchrun: rank r of N embeds the r-th of N contiguous shards of the inputs into
    `OUT/part-r-of-N.npz`; once every rank has written its part, rank 0 lists them in
    `OUT/parts.json` (`reid index add INDEX OUT` adds them as segments in one step). The
    parts in rank order are the inputs in order, as one process would have embedded them.

    Raises:
        RecipeError: a dataset (its query/gallery file is written by one process), or fewer
            images than processes. OutputError: OUT is a file, or a folder holding other files.
    """
    import torch.distributed as dist

    from reidcli.engine.runtime import init_process_group

    if options.dataset is not None:
        raise RecipeError(
            "a sharded reid embed (torchrun) takes images, folders and lists; embed a prepared "
            "dataset's query and gallery in one process"
        )
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file; under torchrun --out names a folder of parts")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if p.name != PARTS and not PART.fullmatch(p.name)]
        if foreign:
            raise OutputError(
                f"{out}: holds files that are not reid embed parts ({', '.join(foreign[:3])}); "
                "give an empty or new folder"
            )
    paths = collect_inputs(inputs)
    if len(paths) < world:
        raise RecipeError(f"{len(paths)} images for {world} processes: use fewer processes")
    init_process_group("gloo")
    try:
        if rank == 0:  # exports a checkpoint for ONNX Runtime once, if it picks it
            prepared = _runner(model, options, len(paths) // world, reporter)
            out.mkdir(parents=True, exist_ok=True)
            for old in out.iterdir():  # the previous parts go before any rank writes its own
                old.unlink()
        dist.barrier()
        if rank != 0:
            prepared = _runner(model, options, len(paths) // world, reporter)
        runner, batch_size, workers, stated = prepared
        started = time.perf_counter()
        shard = paths[rank * len(paths) // world : (rank + 1) * len(paths) // world]
        feats, kept, skipped = run_images(runner, shard, batch_size, workers, options.strict,
                                          reporter)  # fmt: skip
        part = out / f"part-{rank:05d}-of-{world:05d}.npz"
        _save_arrays(part, features=feats, paths=np.asarray(kept, dtype=str), **stated)
        counts: list = [None] * world
        dist.all_gather_object(counts, (part.name, len(kept), int(feats.shape[1])))
        if rank == 0:
            listing = {"parts": [c[0] for c in counts], "rows": [c[1] for c in counts],
                       "world_size": world, "inputs": len(paths)}  # fmt: skip
            write_text_atomic(out / PARTS, json.dumps(listing, indent=1))
        dist.barrier()  # every rank returns once the listing is there
        seconds = time.perf_counter() - started
    finally:
        dist.destroy_process_group()
    total = sum(c[1] for c in counts)
    return EmbedResult(
        out=str(out), model=str(runner.source), backend=runner.backend, num_images=total,
        embedding_dim=counts[0][2], batch_size=batch_size, seconds=round(seconds, 3),
        skipped=tuple(SkippedImage(s["path"], s["error"]) for s in skipped),
        images_per_second=round(total / max(seconds, 1e-9), 2), parts=world,
    )  # fmt: skip


def _runner(model, options: EmbedOptions, count: int, reporter) -> tuple:
    """(runner, batch size, decoding workers, what the features file states: its distance and
    checkpoint) for `count` images."""
    runner, defaults = load_runner(model, options.device, options, options.recipe)
    runner = _faster_runner(runner, defaults[3], options, count, reporter)
    batch_size = _batch_size(runner, options.batch, defaults[0])
    workers = defaults[1] if options.workers is None else options.workers
    stated = {} if defaults[2] is None else {"distance": np.asarray(defaults[2])}
    model_sha256 = runner_model(runner)
    if model_sha256 is not None:
        stated[MODEL_KEY] = np.asarray(model_sha256)
    return runner, batch_size, workers, stated


def _dataset_size(root: Path) -> int:
    from reidcli.data.manifest import load_manifest

    frame = load_manifest(root)
    return int(frame["split"].isin(["query", "gallery"]).sum())


def _faster_runner(runner: Runner, recipe, options: EmbedOptions, count: int, reporter) -> Runner:
    """A checkpoint's runner, or its ONNX Runtime export where `options.runner` picks it."""
    from reidcli.verbs import backend

    if runner.backend != "pytorch":
        if options.runner != "auto":
            raise RecipeError(
                f"runner {options.runner}: {runner.source} is an exported file and runs on "
                f"{runner.backend}; runner applies to runs and checkpoints"
            )
        return runner
    faster = backend.onnx_runner(
        options.runner, runner.source, recipe, options.recipe, options.device, count, reporter
    )
    return runner if faster is None else faster


def _batch_size(runner: Runner, asked: int | None, default: int) -> int:
    static = runner.contract.static_batch
    if static is not None:
        if asked is not None and asked != static:
            raise RecipeError(f"{runner.source} takes batches of exactly {static}; drop batch")
        return static
    return asked or default


def _embed_dataset(
    runner, root: Path, out: Path, batch_size, workers, reporter, model_sha256: str | None
) -> dict:
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

    save_features(
        out, qf, gf, query["pid"].to_numpy(np.int64), gallery["pid"].to_numpy(np.int64),
        query["camid"].to_numpy(np.int64), gallery["camid"].to_numpy(np.int64),
        query["path"].to_numpy(str), gallery["path"].to_numpy(str), model_sha256=model_sha256,
    )  # fmt: skip
    return {"num_query": len(query), "num_gallery": len(gallery), "dim": int(qf.shape[1])}


def _save_arrays(out: Path, **arrays) -> None:
    """An .npz written beside `out` and renamed into place."""
    with atomic_path(out) as tmp, tmp.open("wb") as handle:  # np.savez would append .npz
        np.savez(handle, **arrays)
