"""INT8 ONNX files: post-training static quantization, refused when retrieval suffers.

Quantization is ONNX Runtime's (`onnxruntime.quantization.quantize_static`): QDQ format, int8
weights per output channel, uint8 activations with ranges calibrated (min/max) on real crops of a
prepared dataset's train split, chosen with a seed. The check of the file is not element parity
(INT8 never has it) but retrieval parity: the dataset's validation (or, without one, test) query
and gallery are embedded with the fp32 and the INT8 file and scored with the Market protocol;
the file is refused when mAP or rank-1 drops by more than the allowed points.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from reidcli.errors import DatasetError, ExportError, ParityError

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 16
EMBED_BATCH = 32
SPLITS = (("val_query", "val_gallery"), ("query", "gallery"))


def calibration_set(root: Path, count: int, seed: int, transform) -> tuple[np.ndarray, dict]:
    """`count` train crops of the prepared dataset at `root`, preprocessed as evaluation does.

    Returns:
        (N, 3, H, W) float32 images and a description (dataset, split, count, seed, paths).

    Raises:
        ExportError: no prepared dataset, no train split, or no readable image.
    """
    from reidcli.data.dataset import load_image
    from reidcli.data.manifest import load_manifest

    try:
        frame = load_manifest(str(root))
    except DatasetError as err:
        raise ExportError(f"--calibrate {root}: {err}") from None
    train = frame[frame["split"] == "train"]
    if not len(train):
        raise ExportError(f"--calibrate {root}: the prepared dataset has no train split")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(train), size=min(count, len(train)), replace=False))
    paths = [str(p) for p in train["path"].to_numpy()[chosen]]
    images, unreadable = [], 0
    for path in paths:
        try:
            images.append(transform(load_image(path)).numpy())
        except (DatasetError, OSError):
            unreadable += 1
    if not images:
        raise ExportError(f"--calibrate {root}: none of the {len(paths)} chosen crops is readable")
    if unreadable:
        log.warning("calibration: %d of %d crops unreadable, skipped", unreadable, len(paths))
    about = {"dataset": str(root), "split": "train", "images": len(images), "seed": seed}
    return np.stack(images).astype(np.float32), about


def quantize(fp32: Path, out: Path, images: np.ndarray, input_name: str) -> None:
    """Write the INT8 (QDQ) version of the ONNX file `fp32` to `out`, calibrated on `images`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                images[i : i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)
            )

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    try:
        with warnings.catch_warnings(), _quiet_onnxruntime():
            warnings.simplefilter("ignore")
            quantize_static(
                str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )  # fmt: skip
    except Exception as err:  # onnxruntime raises many kinds
        text = str(err).strip().splitlines()
        raise ExportError(
            f"ONNX Runtime cannot quantize the model: {text[0][:300] if text else err!r}"
        ) from None


def retrieval_check(
    fp32_run: Callable, int8_run: Callable, recipe, transform, max_drop: float
) -> dict:
    """mAP and rank-1 of both files on the recipe's dataset (validation split, else test).

    Returns:
        {"split", "fp32": {mAP, rank1}, "int8": {...}, "drop": {mAP, rank1} (points),
        "max_drop", "passed"}.

    Raises:
        ExportError: the dataset has neither a validation nor a test query/gallery.
    """
    from reidcli.data.dataset import load_image
    from reidcli.data.manifest import load_manifest
    from reidcli.metrics.evaluate import evaluate_features
    from reidcli.metrics.features import as_features

    try:
        frame = load_manifest(recipe.data.root, recipe.data.manifest)
    except DatasetError as err:
        raise ExportError(
            f"the INT8 check scores retrieval on the recipe's dataset: {err}"
        ) from None
    for query_split, gallery_split in SPLITS:
        query = frame[frame["split"] == query_split]
        gallery = frame[frame["split"] == gallery_split]
        if len(query) and len(gallery):
            break
    else:
        raise ExportError(
            f"{recipe.data.root}: no validation or test query/gallery to check the INT8 file on"
        )
    images = {}
    for name, rows in (("query", query), ("gallery", gallery)):
        images[name] = np.stack([transform(load_image(str(p))).numpy() for p in rows["path"]])
    scores = {}
    for label, run in (("fp32", fp32_run), ("int8", int8_run)):
        feats = {name: _embed(run, batch) for name, batch in images.items()}
        features = as_features(
            feats["query"], feats["gallery"], query["pid"].to_numpy(), gallery["pid"].to_numpy(),
            query["camid"].to_numpy(), gallery["camid"].to_numpy(), source=f"{label} embedding",
        )  # fmt: skip
        plain = recipe.eval.model_copy(update={"rerank": recipe.eval.rerank.model_copy(
            update={"enabled": False})})  # fmt: skip
        metrics = evaluate_features(features, plain)
        scores[label] = {"mAP": 100 * metrics["mAP"], "rank1": 100 * metrics["rank1"]}
    drop = {key: scores["fp32"][key] - scores["int8"][key] for key in ("mAP", "rank1")}
    return {
        "split": query_split.split("_")[0] if query_split.startswith("val") else "test",
        "queries": len(query),
        "gallery": len(gallery),
        **scores,
        "drop": drop,
        "max_drop": max_drop,
        "passed": all(value <= max_drop for value in drop.values()),
    }


def failure_message(check: dict, calibration: dict) -> str:
    drop = check["drop"]
    return (
        f"the INT8 file loses {drop['mAP']:.2f} mAP and {drop['rank1']:.2f} rank-1 points on the "
        f"{check['split']} split ({check['fp32']['mAP']:.2f} -> {check['int8']['mAP']:.2f} mAP), "
        f"more than --max-map-drop {check['max_drop']:g}; calibrated on "
        f"{calibration['images']} crops of {calibration['dataset']}"
    )


def refuse(check: dict, calibration: dict, path: Path) -> ParityError:
    return ParityError(failure_message(check, calibration) + f"; nothing written to {path}")


def _embed(run: Callable, images: np.ndarray) -> np.ndarray:
    out = [
        run(torch.from_numpy(images[i : i + EMBED_BATCH]))
        for i in range(0, len(images), EMBED_BATCH)
    ]
    return np.concatenate(out)


@contextlib.contextmanager
def _quiet_onnxruntime():
    """The quantizer logs each node it cannot quantize at INFO/WARNING: keep that out."""
    logger = logging.getLogger("root")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
