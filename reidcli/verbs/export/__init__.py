"""`reid export`: a checkpoint to ONNX, .pt2 or TorchScript files, checked against the model.

`job.py` holds what every format of one run shares, `formats.py` how each format is written
and checked. The formats and their options are the recipe's `export` section
(`reidcli.recipe.run.Export`): a new option is a field there, read here from `rec.export`.

Each file is written under a temporary name beside its destination, checked, given its metadata,
then renamed into place: a failed export or parity check leaves the destination as it was.
"""

from __future__ import annotations

from pathlib import Path

from reidcli.errors import RecipeError
from reidcli.export.metadata import sidecar_path
from reidcli.export.writers import require_onnx, require_onnxruntime
from reidcli.outputs import check_output_file
from reidcli.recipe.options import ExportOptions
from reidcli.results import ExportResult
from reidcli.verbs.export.formats import FORMATS, SUFFIXES, calibration_set, export_one
from reidcli.verbs.export.job import build_job, max_opset, normalise, sample_images


def export(target, options: ExportOptions, overrides: list[str]) -> ExportResult:
    """See `reidcli.api.export`."""
    from reidcli.engine.checkpoint import find_checkpoint
    from reidcli.inference.checkpoints import load_trained_model

    checkpoint = find_checkpoint(target, options.runs_dir)
    model, trained = load_trained_model(checkpoint, options.recipe)
    rec = _with_overrides(trained, overrides, checkpoint)
    cfg = rec.export
    if options.out is not None and len(cfg.formats) > 1:
        raise RecipeError("out names one file: export one format at a time")
    if not 11 <= cfg.opset <= max_opset():
        raise RecipeError(
            f"opset must be in 11..{max_opset()} (torch.onnx's range), got {cfg.opset}"
        )
    if {"onnx", "openvino"} & set(cfg.formats):
        require_onnx()  # OpenVINO converts the ONNX graph
        if cfg.int8 or (cfg.check and "onnx" in cfg.formats):
            require_onnxruntime()
    if "openvino" in cfg.formats:
        from reidcli.export.openvino import require_openvino

        require_openvino()
    paths = [_default_path(f, checkpoint, rec, cfg.int8) if options.out is None
             else Path(options.out) for f in cfg.formats]  # fmt: skip
    for fmt, path in zip(cfg.formats, paths, strict=True):  # all checked before any is written
        if path.resolve() == checkpoint.resolve():
            raise RecipeError(f"out {path} is the checkpoint being exported; choose another file")
        if fmt == "openvino":
            from reidcli.export.openvino import check_output_folder

            check_output_folder(path)
        else:
            check_output_file(path, "exported model")
            check_output_file(sidecar_path(path), "metadata sidecar")
    job = build_job(model.float().cpu().eval(), rec, checkpoint)
    if cfg.int8:  # read before anything is exported: bad calibration data fails at once
        job.calibration = calibration_set(rec, job.contract)
    exports = [export_one(fmt, path, job) for fmt, path in zip(cfg.formats, paths, strict=True)]
    return ExportResult(str(checkpoint), job.sha256, rec.model.name, tuple(exports))


def default_stem(checkpoint: Path, recipe) -> str:
    """The name of a default export, as trackers recognise it: `<model>_<dataset>` (BoxMOT's
    model name where it has one: `lmbn_n_market1501`), `_<checkpoint>` added for a checkpoint
    other than `best.pt` (`lmbn_n_market1501_last`)."""
    from reidcli.export.metadata import BOXMOT_NAMES

    model = BOXMOT_NAMES.get(recipe.model.name, recipe.model.name)
    stem = f"{model}_{recipe.data.dataset}"
    return stem if checkpoint.stem == "best" else f"{stem}_{checkpoint.stem}"


def _default_path(fmt: str, checkpoint: Path, recipe, int8: bool = False) -> Path:
    """Beside the checkpoint, named by `default_stem`: lmbn_n_market1501.onnx (-int8.onnx),
    .pt2, .torchscript, lmbn_n_market1501_openvino_model/ (_int8_openvino_model/)."""
    stem = default_stem(checkpoint, recipe)
    if fmt == "openvino":
        from reidcli.export.openvino import folder_for

        return folder_for(checkpoint.with_name(f"{stem}_int8" if int8 else stem))
    if int8:
        return checkpoint.with_name(f"{stem}-int8.onnx")
    return checkpoint.with_name(stem + SUFFIXES[fmt])


def _with_overrides(trained, overrides: list[str], checkpoint):
    """The checkpoint's recipe with `export.*` and `eval.*` overrides (nothing else changes
    the file an export describes)."""
    from reidcli.recipe import override_recipe

    recipe = override_recipe(trained, overrides, source=f"{checkpoint} recipe + --set")
    changed = [
        name for name in type(recipe).model_fields
        if name not in ("export", "eval") and getattr(recipe, name) != getattr(trained, name)
    ]  # fmt: skip
    if changed:
        raise RecipeError(
            f"{', '.join(changed)} cannot change when exporting a trained model; export.* and "
            "eval.* can"
        )
    return recipe


__all__ = ["FORMATS", "export", "max_opset", "normalise", "sample_images"]
