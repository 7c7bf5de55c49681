"""The options models of the gallery verbs: `reid index build|add|remove|compact|rebuild|calibrate|
info` and `reid search` (torch-free)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from reidcli.devices import Device
from reidcli.recipe.base import MAX_SEED
from reidcli.recipe.options_base import IndexBackend, IndexKind, Metric, Options


class GalleryAt(Options):
    """Where a gallery is: a faiss index folder, or a Milvus collection."""

    backend: IndexBackend = Field(
        "faiss", description="faiss: a local index folder; milvus: a collection at uri"
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


class IndexAddOptions(GalleryAt):
    """`reid index add`: a features file (or a folder of `reid embed` parts) to append."""

    replace: bool = Field(
        False, description="rows whose path is already in the index replace the stored ones "
        "(else such an add is refused)",
    )  # fmt: skip


class IndexRebuildOptions(GalleryAt):
    """`reid index rebuild`: an IVF-PQ quantizer trained again on the rows the index holds."""

    nlist: int | None = Field(
        None, ge=1, le=1 << 24, description="IVF lists (default about 4·√N of the rows now)"
    )
    dry_run: bool = Field(False, description="measure recall both ways, write nothing")
    recall_sample: int = Field(
        1000, ge=1, le=1 << 20, description="stored rows used to measure recall@10"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the training and recall samples")


class IndexRemoveOptions(GalleryAt):
    """`reid index remove`: a person, or listed image paths."""

    paths_file: str | None = Field(
        None, description="text file of image paths to delete, one per line"
    )
    pid: int | None = Field(None, description="delete every crop of this person")
    purge: bool = Field(
        False, description="also rewrite every segment file that held deleted rows, so that the "
        "index's files no longer contain them (faiss)",
    )  # fmt: skip

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
    max_segments: int = Field(
        32, ge=0, le=1 << 16, description="past this many segments, the adjacent half with the "
        "fewest rows is merged into one (faiss; 0: only reid index compact)",
    )  # fmt: skip
    max_deleted: float = Field(
        0.25, ge=0, le=1, description="a segment whose deleted rows pass this share of its rows "
        "is rewritten without them (faiss; 0: only reid index compact)",
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
