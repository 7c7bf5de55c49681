"""The base of the verbs' options models and the types they share (torch-free); the models
themselves are in `reidcli.recipe.options` and, by concern, `gallery_options` and
`calibrate_options`."""

from __future__ import annotations

from pathlib import PurePath
from typing import Literal

from pydantic import ValidationError, model_validator

from reidcli.errors import UsageError
from reidcli.recipe.base import Section

IndexBackend = Literal["faiss", "milvus"]
IndexKind = Literal["auto", "flat", "hnsw", "ivfpq"]
Metric = Literal["cosine", "euclidean"]
Split = Literal["test", "val"]
ModelRunner = Literal["auto", "pytorch", "onnxruntime"]
RUNNER_HELP = (
    "what embeds a run or checkpoint: auto (on a CPU in fp32, ONNX Runtime through an export "
    "cached beside the checkpoint, when one is cached or the job has 1000+ images; else "
    "PyTorch), pytorch, or onnxruntime"
)

# Batch size of exported files when the caller gives none: a checkpoint brings its recipe's.
EXPORT_BATCH = 32
# Image-decoding processes of exported files when the caller gives none.
EXPORT_WORKERS = 2


class OptionsError(UsageError):
    """Options that do not validate; `problems` are (field path, reason) in the library's words,
    which the CLI shows under the flags that set them."""

    def __init__(self, problems: list[tuple[str, str]], model: str):
        self.problems = problems
        self.model = model
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))


class Options(Section):
    """Base of the verbs' options models: frozen, unknown keys refused, numbers bounded; file
    paths given as `pathlib` paths are kept as strings."""

    @model_validator(mode="before")
    @classmethod
    def _paths_as_text(cls, value):
        if isinstance(value, dict):
            value = {k: str(v) if isinstance(v, PurePath) else v for k, v in value.items()}
        return value

    @classmethod
    def build(cls, values: dict | None = None, **fields):
        """Validate `values` and `fields` (None values mean "not given": the default applies).

        Raises:
            OptionsError: naming each invalid field.
        """
        given = {k: v for k, v in {**(values or {}), **fields}.items() if v is not None}
        try:
            return cls.model_validate(given)
        except ValidationError as err:
            problems = []
            for item in err.errors():
                path = ".".join(str(p) for p in item["loc"]) or "(options)"
                reason = item["msg"].removeprefix("Value error, ")
                if item["type"] == "extra_forbidden":
                    reason = f"unknown option; known: {', '.join(cls.model_fields)}"
                problems.append((path, reason))
            raise OptionsError(problems, cls.__name__) from None

    @classmethod
    def resolve(cls, options, fields: dict):
        """`options` as given, or built from keyword `fields` (not both)."""
        if options is not None:
            if fields:
                raise UsageError(f"give {cls.__name__} or its fields, not both")
            if not isinstance(options, cls):
                raise UsageError(f"expected {cls.__name__}, got {type(options).__name__}")
            return options
        return cls.build(fields)


Size = tuple[int, int]
Triple = tuple[float, float, float]
