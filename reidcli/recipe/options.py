"""The options models of the verbs whose options do not belong to a run (torch-free).

An option that belongs to a run lives in its recipe section (`eval`, `export`, `bench`, ...);
an option of one invocation lives here. Each model is the one definition of its options: the
default, the bounds, the choices and the description that `reid COMMAND --help` shows. The
CLI fills a model from the flags that were given; `reidcli.api` takes the model (or its fields
as keyword arguments); the implementation takes the same model.

Adding an option: one field here (or in the recipe section) and, where it has a flag, one line
in its command's module under `reidcli/cli/`.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from reidcli.devices import Device
from reidcli.errors import UsageError
from reidcli.recipe.base import MAX_SEED, Section
from reidcli.recipe.data import MAX_SIDE

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
    synthetic: SyntheticOptions = SyntheticOptions()


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


class GalleryAt(Options):
    """Where a gallery is: a faiss index file, or a Milvus collection."""

    backend: IndexBackend = Field(
        "faiss", description="faiss: one local file; milvus: a collection at uri"
    )
    uri: str | None = Field(
        None, description="Milvus server (http://host:19530) or Milvus Lite file (gallery.db)"
    )

    @model_validator(mode="after")
    def _uri(self):
        if (self.backend == "milvus") != (self.uri is not None):
            raise ValueError("uri (a Milvus server or Milvus Lite file) goes with backend milvus")
        return self


class IndexSearch(GalleryAt):
    """Where a gallery is and how broadly an approximate one is searched."""

    nprobe: int | None = Field(
        None, ge=1, le=1 << 16, description="IVF-PQ lists searched (default: the index's)"
    )
    ef_search: int | None = Field(
        None, ge=1, le=1 << 16, description="HNSW search beam (default: the index's)"
    )


class IndexRemoveOptions(GalleryAt):
    """`reid index remove`: a person, or listed image paths."""

    paths_file: str | None = Field(
        None, description="text file of image paths to delete, one per line"
    )
    pid: int | None = Field(None, description="delete every crop of this person")

    @field_validator("pid")
    @classmethod
    def _person(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError(f"must be a person id (>= 0), got {value}")
        return value

    @model_validator(mode="after")
    def _one_of(self):
        if (self.paths_file is None) == (self.pid is None):
            raise ValueError("give paths_file or pid (one of them)")
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
        description="file to write (one format); default beside the checkpoint (best.onnx)",
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
    out: str = Field("features.npz", description="features .npz to write")
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


class HnswOptions(Options):
    """HNSW graph parameters."""

    m: int = Field(32, ge=2, le=256, description="links per node")
    ef_construction: int = Field(80, ge=1, le=1 << 16, description="build beam")
    ef_search: int = Field(64, ge=1, le=1 << 16, description="search beam by default")


class IvfpqOptions(Options):
    """IVF-PQ parameters; None: chosen from the data."""

    nlist: int | None = Field(None, ge=1, le=1 << 24, description="IVF lists (default about 4·√N)")
    pq_m: int | None = Field(
        None, ge=1, le=4096, description="PQ sub-quantizers, 8 bits each (default D/8)"
    )
    refine: int = Field(
        10,
        ge=0,
        le=1000,
        description="the first 10 hits are chosen among R times as many candidates, "
        "re-scored exactly (0: PQ distances, no vectors kept)",
    )
    nprobe: int | None = Field(
        None, ge=1, le=1 << 24, description="lists searched by default (default nlist/8)"
    )


class IndexBuildOptions(GalleryAt):
    """`reid index build`: the kind of index, its parameters, and where it goes."""

    kind: IndexKind = Field(
        "auto", description="flat (exact), hnsw or ivfpq; auto: flat below 200,000 rows"
    )
    metric: Metric | None = Field(
        None, description="cosine or euclidean (default: the file's stated distance, or cosine)"
    )
    hnsw: HnswOptions | None = Field(None, description="HNSW parameters (kind hnsw)")
    ivfpq: IvfpqOptions | None = Field(None, description="IVF-PQ parameters (kind ivfpq)")
    recall_sample: int = Field(
        1000, ge=1, le=1 << 20, description="stored rows used to measure recall@10"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the training and recall samples")
    overwrite: bool = Field(False, description="replace an existing index")
    calibration: str | None = Field(
        None, description="calibration file (reid calibrate) kept with the index, for search "
        "--threshold far=X; it must come from the model of the features",
    )  # fmt: skip

    @field_validator("hnsw", "ivfpq")
    @classmethod
    def _parameters_of_the_kind(cls, value, info):
        kind = info.data.get("kind", "auto")
        if value is not None and kind not in (info.field_name, "auto"):
            raise ValueError(f"{info.field_name} parameters do not apply to a {kind} index")
        return value


class SearchOptions(IndexSearch):
    """`reid search`: how many hits, which ones, and where the results go."""

    model: str | None = Field(
        None, description="run folder, checkpoint or export that embeds image queries"
    )
    topk: int = Field(10, ge=1, description="hits per query (at most the gallery's rows)")
    exclude_same_camera: bool = Field(
        False, description="drop hits of the query's identity from the query's camera (Market-1501 "
        "rule); a query without a known identity drops every hit of its camera (needs camids)",
    )  # fmt: skip
    out: str | None = Field(None, description="also write the results (.json or .csv)")
    device: Device = Field("auto", description="where the model runs")
    threshold: str | None = Field(
        None, description="mark each hit match true/false and each query found true/false: "
        "far=F (the threshold calibrated for false-match rate F: the index's calibration, or "
        "calibration) or a distance X (same person when distance < X)",
    )  # fmt: skip
    calibration: str | None = Field(
        None, description="calibration file (reid calibrate) instead of the index's"
    )
    matches_only: bool = Field(
        False, description="print and write only the hits under the threshold"
    )

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: str | None) -> str | None:
        if value is not None:
            parse_threshold(value)
        return value

    @model_validator(mode="after")
    def _needs_threshold(self):
        if self.threshold is None:
            given = [n for n in ("calibration", "matches_only") if getattr(self, n)]
            if given:
                verb = "applies" if len(given) == 1 else "apply"
                raise ValueError(f"{', '.join(given)} {verb} to threshold")
        return self


def parse_threshold(text: str) -> tuple[str, float]:
    """`far=F` as ("far", F) with 0 < F <= 0.1, or a distance `X` as ("distance", X).

    Raises:
        ValueError: anything else.
    """
    head, _, tail = text.strip().partition("=")
    try:
        if tail:
            if head.strip().lower() != "far":
                raise ValueError
            far = float(tail)
            if not 0 < far <= 0.1:
                raise ValueError
            return "far", far
        value = float(head)
    except ValueError:
        raise ValueError(
            f"must be far=F (a calibrated false-match rate, 0 < F <= 0.1) or a distance, got "
            f"{text!r}"
        ) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"a distance threshold must be a finite number, got {text!r}")
    return "distance", value


# False-match rates calibrated when none are asked for.
DEFAULT_FARS = (0.01, 0.001, 0.0001)


def check_fars(value: tuple[float, ...]) -> tuple[float, ...]:
    """False-match rates in (0, 0.1], each once, in the order given."""
    if not value:
        raise ValueError("give at least one false-match rate")
    bad = [f for f in value if not 0 < f <= 0.1]
    if bad:
        raise ValueError(f"false-match rates must be in (0, 0.1], got {bad}")
    return tuple(dict.fromkeys(float(f) for f in value))


class CalibrateOptions(Options):
    """`reid calibrate`: the false-match rates, the bootstrap, and where the calibration goes."""

    far: tuple[float, ...] = Field(
        DEFAULT_FARS, description="false-match rates to calibrate (comma-separated, each <= 0.1)"
    )
    out: str | None = Field(
        None, description="calibration file (.json); default RUN/calibration.json for a run, "
        "FEATURES.calibration.json beside a features file",
    )  # fmt: skip
    plot: bool = Field(True, description="draw the ROC curve to a PNG beside the calibration")
    distance: Metric | None = Field(
        None, description="distance of a features file that states none (default cosine); a "
        "run's is its recipe's eval.distance",
    )  # fmt: skip
    split: Split = Field("val", description="the split of a run that is embedded")
    bootstrap: int = Field(
        200, ge=20, le=10_000, description="bootstrap replicates (identities drawn with "
        "replacement) of the confidence intervals",
    )  # fmt: skip
    confidence: float = Field(0.95, ge=0.5, le=0.999, description="confidence of the intervals")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the bootstrap")
    verify: str | None = Field(
        None, description="measure the FAR and TAR this calibration's thresholds give on SOURCE "
        "instead of calibrating",
    )  # fmt: skip
    device: Device = Field("auto", description="where a run's model runs")
    runner: ModelRunner = Field("auto", description=RUNNER_HELP)
    recipe: str | None = Field(
        None, description="recipe of a weights file that carries none (LightMBN .pth)"
    )

    @field_validator("far")
    @classmethod
    def _far(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return check_fars(value)
