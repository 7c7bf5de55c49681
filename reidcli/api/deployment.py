"""Deployment: `reid export` and `reid embed`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reidcli.api.overrides import Overrides, as_overrides
from reidcli.recipe.options import EmbedOptions, ExportOptions
from reidcli.recipe.run import Export
from reidcli.reporting import Reporter
from reidcli.results import EmbedResult, ExportResult


def export(
    target: str | Path | None = None,
    options: ExportOptions | None = None,
    *,
    overrides: Overrides = (),
    **fields: Any,
) -> ExportResult:
    """Export a trained model's embedding to ONNX and/or TorchScript, checked against PyTorch.

    The file takes `images`, (N, 3, H, W) float32 RGB scaled to [0, 1] and normalised with the
    recipe's mean/std (uint8 RGB with `export.include_preprocessing`), and returns `features`,
    (N, D), exactly `model.embed` with the recipe's eval settings. Metadata (input contract,
    embedding, versions, checkpoint sha256, parity) goes into the file and into
    `PATH.metadata.json`.

    What is written and how is the recipe's `export` section (`reidcli.recipe.run.Export`:
    formats, opset, static_batch, fp16, include_preprocessing, check, atol, min_cos, exporter),
    from the checkpoint's recipe with `overrides` (`export.*` and `eval.*` keys). Its fields may
    also be given as keyword arguments (`formats="onnx"`, `check=False`), shorthand for those
    overrides.

    Args:
        target: a run folder (best.pt, else last.pt), a checkpoint, or None for the newest run.
        options: an `ExportOptions` (`out`: the file, one format only, default beside the
            checkpoint; `recipe`: the recipe of a weights file that carries none), or its
            fields as keyword arguments.
        overrides: recipe values that win (see `Overrides`).

    Raises:
        ParityError: the check failed (nothing is written; `.report` holds the figures).
        ExportError: an operator cannot be exported, or the `export` extra is missing.
        RecipeError: invalid options.
    """
    from reidcli.verbs.export import export as run

    section = {k: fields.pop(k) for k in list(fields) if k in Export.model_fields}
    shorthand = [f"export.{k}={json.dumps(_plain(v))}" for k, v in section.items()]
    options = ExportOptions.resolve(options, fields)
    return run(target, options, [*shorthand, *as_overrides(overrides)])


def embed(
    model: str | Path,
    inputs: tuple[str | Path, ...] = (),
    options: EmbedOptions | None = None,
    *,
    reporter: Reporter | None = None,
    **fields: Any,
) -> EmbedResult:
    """Embed images (or a prepared dataset's query and gallery) with a checkpoint or export.

    Args:
        model: a run folder, a checkpoint, an `.onnx` file, a `.pt2` program or a TorchScript
            file. Preprocessing
            comes from the recipe or the export metadata.
        inputs: image files, folders (searched recursively) and text files listing image paths.
        options: an `EmbedOptions` (`dataset` instead of inputs: a prepared dataset whose
            query and gallery become a `reid eval --features` file; `out`, `batch`, `device`,
            `workers`, `strict`; `size`, `mean`, `std` of an exported file without metadata;
            `recipe` of a weights file that carries none), or its fields as keyword arguments.
        reporter: progress of the embedding (silent when None).
    """
    from reidcli.verbs.embed import embed as run

    options = EmbedOptions.resolve(options, fields)
    return run(model, tuple(inputs), options, reporter or Reporter())


def _plain(value: Any) -> Any:
    """Keyword values as JSON (paths and tuples included)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value
