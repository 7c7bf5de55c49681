"""The `train`, `eval`, `export` and `bench` sections."""

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from reidcli.devices import Device
from reidcli.recipe.base import MAX_SEED, Section


def _yaml_off(value):
    # YAML 1.1 (PyYAML) reads an unquoted `off` as false: `amp: off` and `--set train.amp=off`.
    return "off" if value is False else value


# Autocast precision; `auto` is bf16 on a CPU with native bf16 arithmetic (AVX-512 BF16, AMX)
# and on a CUDA device that has it, fp16 on older CUDA devices, off elsewhere.
Amp = Annotated[Literal["off", "auto", "bf16", "fp16"], BeforeValidator(_yaml_off)]


class CheckpointPolicy(Section):
    """When checkpoints are written; `last.pt` is always written at the end of every epoch."""

    every_steps: int | None = Field(None, gt=0, description="also write last.pt every N steps")
    keep_epochs: bool = Field(False, description="also keep epoch_NNN.pt for every epoch")
    save_best: bool = Field(True, description="write best.pt on the best validation mAP")


class Wandb(Section):
    """Weights & Biases logging (needs the `wandb` extra)."""

    project: str = "reid"
    mode: Literal["online", "offline", "disabled"] = "offline"
    name: str | None = None


class Train(Section):
    epochs: int = Field(130, gt=0)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    deterministic: bool = Field(False, description="deterministic kernels (slower), exact resume")
    amp: Amp = Field(
        "off", description="autocast precision (auto: bf16 where the device computes it natively)"
    )
    channels_last: bool = False
    compile: bool = Field(False, description="torch.compile the model")
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm")
    grad_accum: int = Field(1, ge=1, le=4096, description="accumulate gradients over N batches")
    sync_bn: bool = Field(
        False, description="SyncBatchNorm in distributed runs (CUDA only; refused on CPU ranks)"
    )
    eval_every: int = Field(10, ge=0, description="validate every N epochs (0: never)")
    val_ids: int = Field(
        0,
        ge=0,
        description="validation identities carved from train when the prepared dataset has none",
    )
    log_every: int = Field(20, gt=0, description="write a metrics.jsonl line every N steps")
    checkpoint: CheckpointPolicy = CheckpointPolicy()
    tensorboard: bool = False
    wandb: Wandb | None = None


class Rerank(Section):
    """k-reciprocal re-ranking (Zhong et al. 2017)."""

    enabled: bool = Field(False, description="k-reciprocal re-ranking")
    k1: int = Field(20, ge=1, description="re-ranking k1 (reciprocal neighbours)")
    k2: int = Field(6, ge=1, description="re-ranking k2 (query expansion neighbours)")
    lambda_: float = Field(
        0.3,
        ge=0,
        le=1,
        alias="lambda",
        description="re-ranking λ (weight of the original distance)",
    )


class QueryExpansion(Section):
    """α-weighted average query expansion over the top-k gallery neighbours."""

    enabled: bool = Field(False, description="αQE before scoring")
    k: int = Field(5, ge=1, description="αQE neighbours")
    alpha: float = Field(3.0, ge=0, description="αQE α")


class Eval(Section):
    amp: Amp = Field(
        "off", description="autocast precision of the embedding (off: fp32, what export writes)"
    )
    flip: bool = Field(True, description="add the features of the horizontally flipped image")
    normalize: Literal["none", "per_branch", "whole"] = Field(
        "per_branch", description="L2 normalisation of the embedding (LightMBN: per branch)"
    )
    distance: Literal["cosine", "euclidean"] = Field("cosine", description="distance")
    ranks: tuple[int, ...] = (1, 5, 10, 20)
    protocol: Literal["market", "cuhk03"] = Field(
        "market", description="cuhk03: classic single-gallery-shot protocol (10 seeded repeats)"
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the cuhk03 protocol's gallery draws"
    )
    rerank: Rerank = Rerank()
    query_expansion: QueryExpansion = QueryExpansion()

    @field_validator("ranks")
    @classmethod
    def _ranks(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(r < 1 or r > 50 for r in value):
            raise ValueError(f"ranks must be between 1 and 50, got {list(value)}")
        return tuple(sorted(set(value)))


# Parity of an exported file with the PyTorch model: (max abs difference, min per-sample
# cosine), for fp32 files and for --fp16 ones.
FP32_TOLERANCE = (1e-4, 0.9999)
FP16_TOLERANCE = (1e-2, 0.999)
ExportFormat = Literal["onnx", "openvino", "pt2", "torchscript"]


class Export(Section):
    """`reid export`: the formats written, their input contract and the parity check."""

    formats: tuple[ExportFormat, ...] = Field(
        ("onnx",),
        description="formats to write (onnx; openvino: an IR folder converted from the ONNX "
        "graph; pt2: a torch.export program; torchscript: legacy, deprecated by PyTorch); "
        "repeat --format for more",
    )
    opset: int = Field(
        18, ge=11, le=30, description="ONNX opset (the dynamo exporter writes 18+; legacy below)"
    )
    static_batch: int | None = Field(
        None, ge=1, le=4096, description="fix the ONNX batch size (default: dynamic)"
    )
    fp16: bool = Field(False, description="float16 weights and arithmetic")
    include_preprocessing: bool = Field(
        False, description="take uint8 RGB; scale and normalise in the graph"
    )
    check: bool = Field(True, description="parity check against the PyTorch model")
    atol: float | None = Field(
        None,
        gt=0,
        description=f"max abs difference allowed (default {FP32_TOLERANCE[0]}; "
        f"{FP16_TOLERANCE[0]} with fp16)",
    )
    min_cos: float | None = Field(
        None,
        gt=0,
        le=1,
        description=f"min per-sample cosine (default {FP32_TOLERANCE[1]}; {FP16_TOLERANCE[1]} "
        "with fp16)",
    )
    exporter: Literal["auto", "dynamo", "legacy"] = Field(
        "auto", description="ONNX exporter: auto (dynamo, legacy where it fails)"
    )
    int8: bool = Field(
        False,
        description="ONNX only: post-training static INT8 quantization (ONNX Runtime), "
        "calibrated on `calibrate`'s train crops and refused when retrieval drops",
    )
    calibrate: str | None = Field(
        None, description="int8: a prepared dataset folder whose train split calibrates"
    )
    calibration_images: int = Field(
        300, ge=1, le=100_000, description="int8: train crops used (a seeded choice)"
    )
    calibration_seed: int = Field(0, ge=0, le=2**63 - 1, description="int8: seed of that choice")
    max_map_drop: float = Field(
        1.0,
        ge=0,
        le=100,
        allow_inf_nan=False,
        description="int8: the most mAP and rank-1 points the INT8 file may lose against the "
        "fp32 one on the recipe's validation (else test) query and gallery",
    )

    @model_validator(mode="before")
    @classmethod
    def _earlier_layout(cls, value):
        # Recipes saved before `static_batch` had `dynamic_batch: true|false` (false: batch 1).
        if isinstance(value, dict) and "dynamic_batch" in value:
            value = dict(value)
            if not value.pop("dynamic_batch"):
                value.setdefault("static_batch", 1)
        return value

    @field_validator("formats", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _options_of_the_formats(self) -> "Export":
        if not self.formats:
            raise ValueError("give at least one format")
        if self.int8:
            if tuple(self.formats) not in (("onnx",), ("openvino",)):
                raise ValueError(
                    "int8 applies to the onnx and openvino formats, one at a time: export it on "
                    "its own"
                )
            if self.calibrate is None:
                raise ValueError(
                    "int8 needs calibration data: give calibrate (--calibrate DATA_DIR), a "
                    "prepared dataset whose train split is read"
                )
            if self.fp16 or self.include_preprocessing:
                raise ValueError("int8 takes float32 input: not with fp16 or include_preprocessing")
        others = [f for f in self.formats if f not in ("onnx", "openvino")]
        if self.static_batch is not None and others:
            raise ValueError(
                f"static_batch applies to ONNX and OpenVINO; a {others[0]} file takes any batch "
                "size"
            )
        return self

    def tolerance(self) -> tuple[float, float]:
        """(atol, min_cos) of the parity check: as given, else the defaults of the precision."""
        default = FP16_TOLERANCE if self.fp16 else FP32_TOLERANCE
        return (
            self.atol if self.atol is not None else default[0],
            self.min_cos if self.min_cos is not None else default[1],
        )


BenchBackend = Literal[
    "torch", "torchscript", "onnxruntime", "openvino", "onnxruntime-int8", "openvino-int8"
]


class Bench(Section):
    """`reid bench`: which settings are timed side by side, and for how long."""

    batch: tuple[int, ...] = Field(
        (1, 32), description="batch sizes of eval mode (train mode times the recipe's P×K batch)"
    )
    mode: Literal["eval", "train", "both"] = Field(
        "eval", description="eval: model.embed as evaluated; train: a whole train step"
    )
    amp: bool | Literal["auto"] = Field(
        False,
        description="time autocast beside fp32; auto: only the precisions this CPU computes "
        "in hardware (an emulated bf16 or fp16 is left out, not timed)",
    )
    dtype: tuple[Literal["bf16", "fp16"], ...] | None = Field(
        None,
        description="autocast precisions timed beside fp32 (implies amp; default with amp: "
        "bf16 on CPU, fp16 on CUDA)",
    )
    channels_last: bool = Field(False, description="time channels_last beside contiguous")
    cudnn_benchmark: bool = Field(False, description="time cudnn.benchmark on beside off (CUDA)")
    compile: bool = Field(False, description="torch.compile the model (torch backend)")
    backend: tuple[BenchBackend, ...] = Field(
        ("torch",),
        description="eval mode: torch, torchscript, onnxruntime, openvino, "
        "onnxruntime-int8 and/or openvino-int8 (the ONNX file quantized to INT8 by ONNX Runtime, "
        "calibrated on random images: speed only; reid export --int8 measures accuracy)",
    )
    device: Device = Field("auto", description="where the model runs")
    threads: int | None = Field(
        None, gt=0, le=1024, description="intra-op threads (default: torch's)"
    )
    warmup: int = Field(3, ge=0, le=10_000, description="untimed iterations before each row")
    iters: int = Field(10, gt=0, le=1_000_000, description="timed iterations per row")
    seconds: float | None = Field(
        None, gt=0, description="time each row for this long instead of a number of iterations"
    )
    reference: bool = Field(
        False,
        description="time a fixed reference workload (torchvision MobileNetV2) in alternation "
        "with each row and record the row's speed relative to it, which compares across CPUs",
    )
    tolerance: float | None = Field(
        None,
        gt=0,
        lt=100,
        description="--compare: the drop in speed (percent) that fails (default: the "
        "baseline's measured tolerance, else 25)",
    )

    @model_validator(mode="before")
    @classmethod
    def _earlier_layout(cls, value):
        # Recipes saved before `reid bench` existed (every checkpoint holds its resolved recipe)
        # have `batch_size` and `amp: off|bf16|fp16`; they read as `batch` and `amp` + `dtype`.
        if isinstance(value, dict):
            value = dict(value)
            if "batch_size" in value and "batch" not in value:
                value["batch"] = value.pop("batch_size")
            if isinstance(value.get("amp"), str) and value["amp"] in ("off", "bf16", "fp16"):
                amp = value.pop("amp")
                value["amp"] = amp != "off"
                if amp != "off":
                    value.setdefault("dtype", [amp])
        return value

    @field_validator("batch", "dtype", "backend", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        # `batch: 32`, `--set bench.dtype=bf16` and "1,32" all name a list of one or more.
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, int):
            value = [value]
        return value

    @field_validator("batch")
    @classmethod
    def _batches(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(not 1 <= b <= 4096 for b in value):
            raise ValueError(f"batch sizes must be positive and at most 4096, got {list(value)}")
        return tuple(sorted(set(value)))

    @field_validator("dtype", "backend")
    @classmethod
    def _distinct(cls, value):
        if value is not None:
            if not value:
                raise ValueError("give at least one value")
            value = tuple(dict.fromkeys(value))
        return value
