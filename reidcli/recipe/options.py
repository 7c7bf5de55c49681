"""The options models of the verbs whose options do not belong to a run (torch-free).

An option that belongs to a run lives in its recipe section (`eval`, `export`, `bench`, ...);
an option of one invocation lives here. Each model is the one definition of its options: the
default, the bounds, the choices and the description that `reid COMMAND --help` shows. The
CLI fills a model from the flags that were given; `reidcli.api` takes the model (or its fields
as keyword arguments); the implementation takes the same model.

The gallery verbs' models are in `gallery_options`, `reid calibrate`'s in `calibrate_options`,
their shared base in `options_base`; every model is importable from here.

Adding an option: one field in its model (or in the recipe section) and, where it has a flag,
one line in its command's module under `reidcli/cli/`.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from reidcli.devices import Device
from reidcli.recipe.base import MAX_SEED
from reidcli.recipe.calibrate_options import DEFAULT_FARS, CalibrateOptions, check_fars
from reidcli.recipe.data import MAX_SIDE
from reidcli.recipe.gallery_options import (
    GalleryAt,
    HnswOptions,
    IndexAddOptions,
    IndexBuildOptions,
    IndexRebuildOptions,
    IndexRemoveOptions,
    IndexSearch,
    IvfpqOptions,
    SearchOptions,
    parse_threshold,
)
from reidcli.recipe.options_base import (
    EXPORT_BATCH,
    EXPORT_WORKERS,
    RUNNER_HELP,
    IndexBackend,
    IndexKind,
    Metric,
    ModelRunner,
    Options,
    OptionsError,
    Size,
    Split,
    Triple,
)

__all__ = [
    "DEFAULT_FARS",
    "EXPORT_BATCH",
    "EXPORT_WORKERS",
    "RUNNER_HELP",
    "AdaptOptions",
    "CalibrateOptions",
    "EmbedOptions",
    "EvalOptions",
    "ExportOptions",
    "GalleryAt",
    "HnswOptions",
    "IndexAddOptions",
    "IndexBackend",
    "IndexBuildOptions",
    "IndexKind",
    "IndexRebuildOptions",
    "IndexRemoveOptions",
    "IndexSearch",
    "IvfpqOptions",
    "Metric",
    "ModelRunner",
    "Options",
    "OptionsError",
    "PrepareOptions",
    "RerankOptions",
    "SearchOptions",
    "Size",
    "Split",
    "SyntheticOptions",
    "TrainOptions",
    "Triple",
    "check_fars",
    "parse_threshold",
]  # fmt: skip


class SyntheticOptions(Options):
    """What `reid prepare synthetic` generates."""

    ids: int = Field(100, ge=2, le=100_000, description="identities (train and test share them)")
    cams: int = Field(6, ge=2, le=99, description="cameras")
    images_per_id: int = Field(8, ge=4, le=1_000, description="images per identity")
    size: Size = Field((128, 64), description="image HEIGHTxWIDTH (16x8 to 2048x2048)")

    @field_validator("size")
    @classmethod
    def _size(cls, value: Size) -> Size:
        if not (16 <= value[0] <= 2048 and 8 <= value[1] <= 2048):
            raise ValueError(f"must be between 16x8 and 2048x2048, got {value[0]}x{value[1]}")
        return value


class PrepareOptions(Options):
    """`reid prepare`: where a dataset comes from and goes, and how it is checked."""

    root: str | None = Field(
        None, description="dataset folder, release .zip, or (folder) a CSV path,pid,camid,split; "
        "default data/raw/DATASET"
    )  # fmt: skip
    out: str | None = Field(None, description="output folder; default data/DATASET")
    val_ids: int = Field(
        0, ge=0, le=1_000_000, description="training identities moved to validation"
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the validation draw and the synthetic data"
    )
    verify: bool = Field(True, description="decode every image")
    strict: bool = Field(
        False, description="fail on corrupt images and on counts above the official statistics"
    )
    overwrite: bool = Field(
        False, description="replace a dataset prepared there before (reid's files only)"
    )
    workers: int | None = Field(
        None, ge=1, le=256, description="processes verifying images (default 1)"
    )
    unlabeled: bool = Field(
        False,
        description="folder: crops without identities (a folder searched recursively, or a CSV "
        "path[,camid]) as a train split for reid adapt; names are not parsed",
    )
    synthetic: SyntheticOptions = SyntheticOptions()

    @model_validator(mode="after")
    def _unlabeled(self) -> PrepareOptions:
        if self.unlabeled and self.val_ids:
            raise ValueError("val_ids needs identities; unlabeled crops have none")
        return self


class TrainOptions(Options):
    """`reid train`: the run folder and how the run starts (the recipe says what it trains)."""

    out: str | None = Field(
        None, description="run folder; default runs/<recipe name>-<date>-<time>"
    )
    resume: bool = Field(False, description="continue the run in --out from its last.pt")
    resume_from: str | None = Field(
        None, description="continue from this checkpoint, writing to --out"
    )
    overwrite: bool = Field(
        False, description="start over in an --out that holds a run (reid's files only)"
    )
    device: Device = Field("auto", description="where to train")

    @model_validator(mode="after")
    def _one_start(self) -> TrainOptions:
        if self.resume and self.resume_from is not None:
            raise ValueError(
                "resume (RUN_DIR/last.pt) and resume_from (a checkpoint) exclude each other"
            )
        if self.overwrite and (self.resume or self.resume_from is not None):
            raise ValueError("overwrite starts a run over; it does not combine with resuming")
        return self


class AdaptOptions(Options):
    """`reid adapt`: the run folder and how the run starts (the recipe's `adapt` section says
    what is adapted to what)."""

    out: str | None = Field(
        None, description="run folder; default runs/<recipe name>-<date>-<time>"
    )
    resume: bool = Field(False, description="continue the run in --out from its last.pt")
    overwrite: bool = Field(
        False, description="start over in an --out that holds a run (reid's files only)"
    )
    device: Device = Field("auto", description="where to adapt")

    @model_validator(mode="after")
    def _one_start(self) -> AdaptOptions:
        if self.overwrite and self.resume:
            raise ValueError("overwrite starts a run over; it does not combine with resume")
        return self


class EvalOptions(IndexSearch):
    """`reid eval`: what is evaluated and where results go (the `eval` recipe section says how)."""

    features: str | None = Field(
        None, description="features .npz (query/gallery features, pids, camids)"
    )
    recipe: str | None = Field(
        None,
        description="recipe of a weights file that carries none (LightMBN .pth); with "
        "features, the recipe whose eval section applies",
    )
    split: Split = Field("test", description="test: query/gallery; val: the validation identities")
    save_features: str | None = Field(
        None, description="also write the extracted features to this .npz"
    )
    visualize: int = Field(
        0,
        ge=0,
        le=1000,
        description="draw ranked lists of the N worst and best queries and the CMC curve",
    )
    visualize_dir: str | None = Field(
        None, description="folder of the visualize PNGs (default: beside the run or features file)"
    )
    device: Device = Field("auto", description="where the model runs")
    runner: ModelRunner = Field("auto", description=RUNNER_HELP)
    runs_dir: str = Field(
        "runs", description="where the newest run is looked for when none is given"
    )
    index: str | None = Field(
        None, description="with features: rank against this gallery index's top-K"
    )
    index_topk: int = Field(
        100, ge=1, le=1 << 20, description="hits per query taken from the index"
    )
    open_set: bool = Field(
        False, description="also the open-set protocol: unknown_ids query identities withheld "
        "from the gallery (drawn with eval.seed); DIR and unknown rejection at each threshold",
    )  # fmt: skip
    unknown_ids: int | None = Field(
        None, ge=1, le=1_000_000, description="identities withheld (default: a quarter)"
    )
    calibration: str | None = Field(
        None, description="open-set thresholds from this calibration (default: the run's "
        "calibration.json when there is one, else set on the unknown queries at far)",
    )  # fmt: skip
    far: tuple[float, ...] = Field(
        (0.1, 0.01, 0.001), description="open-set false-accept rates of the thresholds set on "
        "the unknown queries (without a calibration)",
    )  # fmt: skip

    @field_validator("far")
    @classmethod
    def _far(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or not all(0 < f < 1 for f in value):
            raise ValueError(f"false-accept rates must be in (0, 1), got {list(value)}")
        return tuple(dict.fromkeys(float(f) for f in value))

    @model_validator(mode="after")
    def _open_set_only(self):
        if not self.open_set:
            given = [n for n in ("unknown_ids", "calibration") if getattr(self, n) is not None]
            given += ["far"] if "far" in self.model_fields_set else []
            if given:
                verb = "applies" if len(given) == 1 else "apply"
                raise ValueError(f"{', '.join(given)} {verb} to open_set")
        elif self.index is not None:
            raise ValueError("open_set scores the dense distances; it does not combine with index")
        return self

    @model_validator(mode="after")
    def _index_only(self):
        if self.index is None:
            given = [
                name for name in ("nprobe", "ef_search", "uri") if getattr(self, name) is not None
            ]
            given += ["backend"] if self.backend != "faiss" else []
            if given:
                raise ValueError(f"{', '.join(given)} apply to index")
        return self


class RerankOptions(Options):
    """`reid rerank`: the features and where the re-ranked distances go (the recipe's
    `eval.rerank` and `eval.distance` say how)."""

    recipe: str | None = Field(
        None, description="take eval.rerank, eval.distance and eval.protocol from this recipe"
    )
    out: str | None = Field(
        None, description="write the (Q, G) float32 re-ranked distances to this .npy file"
    )


class ExportOptions(Options):
    """`reid export`: where the files go and which checkpoint (the recipe's `export` section
    says which formats and how)."""

    out: str | None = Field(
        None,
        description="file to write (one format); default beside the checkpoint, named for "
        "trackers: <model>_<dataset> (lmbn_n_market1501.onnx)",
    )
    recipe: str | None = Field(
        None, description="recipe of a weights file that carries none (LightMBN .pth)"
    )
    runs_dir: str = Field("runs", description="where the newest run is looked for")


class EmbedOptions(Options):
    """`reid embed`: which images, the output, and the input contract of bare exported files."""

    dataset: str | None = Field(
        None, description="prepared dataset: write its query/gallery features file"
    )
    out: str = Field(
        "features.npz", description="features .npz to write (under torchrun: a folder of parts, "
        "one per process)",
    )  # fmt: skip
    batch: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="images per batch (default: the recipe's eval batch size; "
        f"{EXPORT_BATCH} for exported files)",
    )
    device: Device = Field("auto", description="where a checkpoint or export runs")
    runner: ModelRunner = Field("auto", description=RUNNER_HELP)
    workers: int | None = Field(
        None,
        ge=0,
        le=256,
        description="image-decoding processes (default: the recipe's; "
        f"{EXPORT_WORKERS} for exported files)",
    )
    strict: bool = Field(False, description="unreadable images are an error")
    size: Size | None = Field(
        None, description="HEIGHTxWIDTH input size of a file without metadata"
    )
    mean: Triple | None = Field(
        None, description="R,G,B normalisation mean of a file without metadata"
    )
    std: Triple | None = Field(
        None, description="R,G,B normalisation std of a file without metadata"
    )
    recipe: str | None = Field(
        None, description="recipe of a weights file that carries none (LightMBN .pth)"
    )

    @model_validator(mode="after")
    def _contract(self) -> EmbedOptions:
        given = {"size": self.size, "mean": self.mean, "std": self.std}
        missing = [name for name, value in given.items() if value is None]
        if len(missing) not in (0, 3):
            raise ValueError(f"size, mean and std go together; missing {', '.join(missing)}")
        if self.size is not None and not 1 <= min(self.size) <= max(self.size) <= MAX_SIDE:
            raise ValueError(f"size sides must be in 1..{MAX_SIDE}, got {self.size}")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std values must be > 0, got {list(self.std)}")
        return self
