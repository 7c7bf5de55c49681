"""The `train`, `eval`, `export` and `bench` sections."""

from typing import Literal

from pydantic import Field, field_validator

from reidcli.recipe.base import Section


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
    seed: int = Field(0, ge=0)
    deterministic: bool = Field(False, description="deterministic kernels (slower), exact resume")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="autocast precision")
    channels_last: bool = False
    compile: bool = Field(False, description="torch.compile the model")
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm")
    grad_accum: int = Field(1, ge=1, description="accumulate gradients over N batches")
    sync_bn: bool = Field(False, description="SyncBatchNorm in distributed runs")
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

    enabled: bool = False
    k1: int = Field(20, ge=1)
    k2: int = Field(6, ge=1)
    lambda_: float = Field(0.3, ge=0, le=1, alias="lambda")


class QueryExpansion(Section):
    """α-weighted average query expansion over the top-k gallery neighbours."""

    enabled: bool = False
    k: int = Field(5, ge=1)
    alpha: float = Field(3.0, ge=0)


class Eval(Section):
    flip: bool = Field(True, description="add the features of the horizontally flipped image")
    normalize: Literal["none", "per_branch", "whole"] = Field(
        "per_branch", description="L2 normalisation of the embedding (LightMBN: per branch)"
    )
    distance: Literal["cosine", "euclidean"] = "cosine"
    ranks: tuple[int, ...] = (1, 5, 10, 20)
    protocol: Literal["market", "cuhk03"] = Field(
        "market", description="cuhk03: classic single-gallery-shot protocol (10 seeded repeats)"
    )
    seed: int = Field(0, ge=0, description="seed of the cuhk03 protocol's gallery draws")
    rerank: Rerank = Rerank()
    query_expansion: QueryExpansion = QueryExpansion()

    @field_validator("ranks")
    @classmethod
    def _ranks(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(r < 1 or r > 50 for r in value):
            raise ValueError(f"ranks must be between 1 and 50, got {list(value)}")
        return tuple(sorted(set(value)))


class Export(Section):
    formats: tuple[Literal["onnx", "torchscript"], ...] = ("onnx",)
    opset: int = Field(17, ge=11)
    dynamic_batch: bool = True
    atol: float = Field(1e-4, gt=0, description="parity tolerance against the PyTorch model")


class Bench(Section):
    batch_size: int = Field(32, gt=0)
    warmup: int = Field(3, ge=0)
    iters: int = Field(10, gt=0)
    amp: Literal["off", "bf16", "fp16"] = "off"
    channels_last: bool = False
