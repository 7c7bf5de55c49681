"""Deployment: `reid export` and `reid embed`."""

from __future__ import annotations

from pathlib import Path

from reidcli.reporting import Reporter


def export(
    target: str | Path | None = None,
    *,
    formats: str | tuple[str, ...] | None = None,
    out: str | Path | None = None,
    opset: int | None = None,
    static_batch: int | None = None,
    fp16: bool = False,
    include_preprocessing: bool = False,
    check: bool = True,
    atol: float | None = None,
    min_cos: float | None = None,
    recipe: str | Path | None = None,
    exporter: str = "auto",
    runs_dir: str | Path = "runs",
) -> dict:
    """Export a trained model's embedding to ONNX and/or TorchScript, checked against PyTorch.

    The file takes `images`, (N, 3, H, W) float32 RGB scaled to [0, 1] and normalised with the
    recipe's mean/std (uint8 RGB with `include_preprocessing`), and returns `features`, (N, D),
    exactly `model.embed` with the recipe's eval settings. Metadata (input contract, embedding,
    versions, checkpoint sha256, parity) goes into the file and into `PATH.metadata.json`.

    Args:
        target: a run folder (best.pt, else last.pt), a checkpoint, or None for the newest run.
        formats: "onnx", "torchscript" or both; default the recipe's `export.formats`.
        out: the file to write (one format only); default beside the checkpoint
            (`best.onnx`, `best.torchscript`).
        opset: ONNX opset; default the recipe's `export.opset`.
        static_batch: fix the batch size (ONNX); default dynamic (recipe `export.dynamic_batch`).
        fp16: float16 weights and arithmetic (input and output stay float32).
        include_preprocessing: take uint8 images and scale and normalise inside the graph.
        check: compare the file with the PyTorch model at batch 1 and 7 (or the static batch).
        atol, min_cos: parity tolerances (defaults: the recipe's `export.atol` and 0.9999; with
            fp16 1e-2 and 0.999).
        recipe: the recipe of a weights file that carries none.
        exporter: "auto" (torch.onnx's dynamo exporter, the legacy one where it fails), "dynamo"
            or "legacy".

    Returns:
        {"checkpoint", "checkpoint_sha256", "model", "exports": [{"format", "path",
        "metadata_path", "exporter", "fallback_reason", "opset", "batch", "input_dtype",
        "precision", "embedding_dim", "parity", "seconds"}, ...]}.

    Raises:
        ParityError: the check failed (nothing is written; `.report` holds the figures).
        ExportError: an operator cannot be exported, or the `export` extra is missing.
        RecipeError: invalid options.
    """
    from reidcli.export.pipeline import export_model

    return export_model(
        target, formats=formats, out=out, opset=opset, static_batch=static_batch, fp16=fp16,
        include_preprocessing=include_preprocessing, check=check, atol=atol, min_cos=min_cos,
        recipe=recipe, exporter=exporter, runs_dir=runs_dir,
    )  # fmt: skip


def embed(
    model: str | Path,
    inputs: tuple[str | Path, ...] = (),
    *,
    dataset: str | Path | None = None,
    out: str | Path | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    workers: int | None = None,
    strict: bool = False,
    size: tuple[int, int] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    recipe: str | Path | None = None,
    reporter: Reporter | None = None,
) -> dict:
    """Embed images (or a prepared dataset's query and gallery) with a checkpoint or export.

    Args:
        model: a run folder, a checkpoint, an `.onnx` file or a TorchScript file. Preprocessing
            comes from the recipe or the export metadata.
        inputs: image files, folders (searched recursively) and text files listing image paths.
        dataset: instead of `inputs`, a prepared dataset folder: its query and gallery are
            embedded into a features file that `reid eval --features` reads.
        out: the `.npz` to write (default `features.npz`).
        batch_size: images per batch (default: the recipe's eval batch size, 32 for exports, or
            a file's static batch).
        device: auto, cpu or cuda.
        workers: image-decoding processes (default: the recipe's, 2 for exports).
        strict: an unreadable image is an error instead of being skipped.
        size, mean, std: the input contract of an exported file without metadata.
        recipe: the recipe of a weights file that carries none.
        reporter: progress of the embedding (silent when None).

    Returns:
        {"out", "model", "backend", "num_images", "embedding_dim", "skipped", "seconds",
        "images_per_second"} (and "num_query", "num_gallery" with `dataset`).
    """
    from reidcli.engine.embed import embed_images

    return embed_images(
        model, tuple(inputs), dataset=dataset, out=out, batch_size=batch_size, device=device,
        workers=workers, strict=strict, size=size, mean=mean, std=std, recipe=recipe,
        reporter=reporter,
    )  # fmt: skip
