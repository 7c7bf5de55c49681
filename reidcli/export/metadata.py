"""The description that travels with an exported file: input contract, embedding, provenance.

It is written three times with the same content: as ONNX `metadata_props` (the whole document
under `reid_metadata`, and each top-level key on its own for tools that read single keys), as the
TorchScript extra file `reid_metadata.json`, and as the sidecar `PATH.metadata.json`. The sidecar
name and its `model_name`, `model_kwargs: {img_size: [H, W]}` and `preprocess` keys are what BoxMOT
reads to size an exported re-ID model's input, so a file works there without guessing from its
name. This module does not import torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from reidcli.errors import ExportError
from reidcli.outputs import write_text_atomic

METADATA_VERSION = 1
METADATA_KEY = "reid_metadata"
# Our catalog names -> BoxMOT's names for the architectures it knows; others keep ours.
BOXMOT_NAMES = {
    "lmbn_n": "lmbn_n",
    "osnet_x1_0": "osnet_x1_0",
    "osnet_x0_75": "osnet_x0_75",
    "osnet_x0_5": "osnet_x0_5",
    "osnet_x0_25": "osnet_x0_25",
    "resnet50": "resnet50",
}
SCALE = 1.0 / 255.0


@dataclass(frozen=True)
class InputContract:
    """How images become a model's input: every backend of `reid embed` prepares them this way.

    Attributes:
        size: (height, width) the images are resized to (bilinear, antialiased).
        mean, std: RGB normalisation after scaling to [0, 1].
        in_graph: the model takes uint8 images and scales and normalises them itself.
        static_batch: the batch size a fixed-batch file requires, or None.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    in_graph: bool = False
    static_batch: int | None = None

    @classmethod
    def from_metadata(cls, meta: dict) -> InputContract:
        """The contract recorded by `build_metadata`."""
        batch = meta.get("batch", "dynamic")
        return cls(
            tuple(meta["input_size"]),
            tuple(meta["mean"]),
            tuple(meta["std"]),
            bool(meta.get("preprocessing_in_graph", False)),
            int(batch) if batch != "dynamic" else None,
        )


def build_metadata(
    *,
    fmt: str,
    recipe,
    contract: InputContract,
    embedding_dim: int,
    branch_dims: tuple[int, ...],
    exporter: str,
    opset: int | None,
    fp16: bool,
    checkpoint: Path,
    checkpoint_sha256: str,
    versions: dict[str, str],
) -> dict:
    """The metadata document of an exported file (parity results are added after the check)."""
    height, width = contract.size
    normalize = recipe.eval.normalize
    return {
        "reid_metadata_version": METADATA_VERSION,
        "model_name": BOXMOT_NAMES.get(recipe.model.name, recipe.model.name),
        "model_kwargs": {"img_size": [height, width]},
        "img_size": [height, width],
        "preprocess": "resize",
        "reid_model": recipe.model.name,
        "format": fmt,
        "exporter": exporter,
        "opset": opset,
        "input_name": "images",
        "output_name": "features",
        "input_size": [height, width],
        "input_dtype": "uint8" if contract.in_graph else "float32",
        "layout": "NCHW",
        "batch": contract.static_batch if contract.static_batch else "dynamic",
        "color_order": "RGB",
        "scale": SCALE,
        "mean": list(contract.mean),
        "std": list(contract.std),
        "preprocessing_in_graph": contract.in_graph,
        "interpolation": "bilinear",
        "antialias": True,
        "embedding_dim": embedding_dim,
        "branch_dims": list(branch_dims),
        "normalize": normalize,
        "l2_normalized": normalize == "whole",
        "flip": recipe.eval.flip,
        "precision": "fp16" if fp16 else "fp32",
        **versions,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
    }


def sidecar_path(path: str | Path) -> Path:
    """`PATH.metadata.json` (BoxMOT's sidecar name)."""
    path = Path(path)
    return path.with_name(path.name + ".metadata.json")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_properties(meta: dict) -> dict[str, str]:
    """ONNX `metadata_props`: the whole document, and each key (strings as is, others JSON)."""
    props = {METADATA_KEY: json.dumps(meta)}
    for key, value in meta.items():
        props[key] = value if isinstance(value, str) else json.dumps(value)
    return props


def write_onnx_metadata(path: Path, meta: dict) -> None:
    """Replace the `metadata_props` of an ONNX file in place."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in onnx_properties(meta).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def write_sidecar(path: Path, meta: dict) -> Path:
    """Write `PATH.metadata.json` atomically; returns its path."""
    return write_text_atomic(sidecar_path(path), json.dumps(meta, indent=2) + "\n")


def read_sidecar(path: str | Path) -> dict | None:
    """The sidecar's document, None when there is none.

    Raises:
        ExportError: the sidecar exists but is not a JSON object.
    """
    target = sidecar_path(path)
    if not target.is_file():
        return None
    try:
        meta = json.loads(target.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExportError(f"{target}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ExportError(f"{target}: expected a JSON object")
    return meta


def check_metadata(meta: dict, source: str) -> dict:
    """Refuse a document without the keys `reid embed` needs.

    Raises:
        ExportError: naming the missing keys.
    """
    needed = ("input_size", "mean", "std", "embedding_dim")
    missing = [key for key in needed if key not in meta]
    if missing:
        raise ExportError(f"{source}: metadata lacks {', '.join(missing)}")
    return meta
