"""`reid embed`: images, or a prepared dataset's query and gallery, through any model backend.

A checkpoint, an ONNX file and a TorchScript file all receive batches made by the same
preprocessing (`build_inference_transform` with the model's `InputContract`), so the features of
a deployed file are comparable with those `reid eval` computes from its checkpoint.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from reidcli.devices import check_device
from reidcli.errors import DatasetError, RecipeError
from reidcli.inference.images import collect_inputs, run_images
from reidcli.inference.runners import Runner, load_runner
from reidcli.metrics.features import MODEL_KEY
from reidcli.outputs import atomic_path, check_output_file
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
    out = check_output_file(options.out, "features file")
    paths = collect_inputs(inputs) if options.dataset is None else None
    count = len(paths) if paths is not None else _dataset_size(Path(options.dataset))
    runner, defaults = load_runner(model, options.device, options, options.recipe)
    runner = _faster_runner(runner, defaults[3], options, count, reporter)
    batch_size = _batch_size(runner, options.batch, defaults[0])
    workers = defaults[1] if options.workers is None else options.workers
    stated = {} if defaults[2] is None else {"distance": np.asarray(defaults[2])}
    model_sha256 = runner_model(runner)
    if model_sha256 is not None:
        stated[MODEL_KEY] = np.asarray(model_sha256)
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
