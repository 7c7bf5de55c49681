"""One function per verb, with typed arguments; the CLI is a thin skin over these.

Importing this module does not import torch; each verb imports what it needs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reidcli.devices import check_device
from reidcli.errors import RecipeError
from reidcli.reporting import Reporter

if TYPE_CHECKING:
    from reidcli.engine.trainer import TrainResult
    from reidcli.recipe import Recipe

log = logging.getLogger(__name__)

# Recipe overrides: `KEY=VALUE` strings as `--set` takes them, or a {dotted key: value} mapping.
Overrides = Sequence[str] | Mapping[str, Any]


def prepare(
    dataset: str,
    root: str | Path | None = None,
    out: str | Path | None = None,
    *,
    val_ids: int = 0,
    seed: int = 0,
    verify: bool = True,
    strict: bool = False,
    ids: int = 100,
    cams: int = 6,
    images_per_id: int = 8,
    size: tuple[int, int] = (128, 64),
    workers: int | None = None,
) -> dict:
    """Prepare a dataset into `out` (manifest.csv, dataset.json) and return its description.

    `ids`, `cams`, `images_per_id` and `size` (height, width) shape the `synthetic` dataset,
    generated with `seed`. See `reidcli.data.prepare.prepare`.
    """
    from reidcli.data.prepare import prepare as run_prepare
    from reidcli.data.synthetic import SyntheticSpec

    spec = SyntheticSpec(ids, cams, images_per_id, size[0], size[1], seed)
    return run_prepare(
        dataset, root, out, val_ids=val_ids, seed=seed, verify=verify, strict=strict,
        synthetic=spec, workers=workers,
    )  # fmt: skip


def train(
    recipe: Recipe | str | Path | None,
    out_dir: str | Path | None = None,
    *,
    overrides: Overrides = (),
    resume: bool = False,
    resume_from: str | Path | None = None,
    device: str = "auto",
    reporter: Reporter | None = None,
) -> TrainResult:
    """Train as the recipe describes, writing checkpoints and logs to a run folder.

    Under `torchrun --max-restarts N`, a restarted group (`TORCHELASTIC_RESTART_COUNT` > 0)
    continues `out_dir` from its `last.pt` as if `resume` were given.

    Args:
        recipe: a `Recipe`, a recipe file, or None with `resume` (the run's own recipe.yaml).
        out_dir: the run folder; default `runs/<recipe name>-<date>-<time>`.
        overrides: recipe values that win over the file (see `Overrides`).
        resume: continue the run in `out_dir` from its `last.pt`.
        resume_from: continue from this checkpoint instead, writing to `out_dir`.
        device: auto, cpu or cuda.
        reporter: progress and messages (silent when None).

    Raises:
        RecipeError: an invalid recipe or override, or inconsistent resume arguments.
        TrainingError, DatasetError, DeviceError: see `reidcli.engine.trainer.train`.
    """
    from reidcli.recipe import Recipe as RecipeModel
    from reidcli.recipe import load_recipe, override_recipe

    check_device(device)
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if restarts and not resume and resume_from is None and out_dir is not None:
        # torchrun --max-restarts restarted the group after a rank died: continue the run.
        resume = (Path(out_dir) / "last.pt").is_file()
        if resume:
            log.warning("torchrun restart %d: continuing %s from its last.pt", restarts, out_dir)
    if resume:
        if out_dir is None:
            raise RecipeError("resume continues a run folder: give it (--out RUN_DIR)")
        if resume_from is not None:
            raise RecipeError("use either resume (RUN_DIR/last.pt) or resume_from (a checkpoint)")
        resume_from = Path(out_dir) / "last.pt"
        if not resume_from.is_file():
            raise RecipeError(f"resume: {resume_from} does not exist")
        recipe = recipe if recipe is not None else Path(out_dir) / "recipe.yaml"
    if recipe is None:
        raise RecipeError("missing recipe: reid train RECIPE [--out RUN_DIR]")
    if isinstance(recipe, RecipeModel):
        resolved = override_recipe(recipe, as_overrides(overrides))
        name = recipe.model.name
    else:
        resolved = load_recipe(recipe, as_overrides(overrides))
        name = Path(recipe).stem
    if out_dir is None:
        out_dir = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    from reidcli.engine.trainer import train as run_training

    return run_training(
        resolved, out_dir, resume_from=resume_from, device=device, reporter=reporter
    )


def evaluate(
    target: str | Path | None = None,
    *,
    features: str | Path | None = None,
    recipe: str | Path | None = None,
    overrides: Overrides = (),
    split: str = "test",
    save_features: str | Path | None = None,
    visualize: int = 0,
    visualize_dir: str | Path | None = None,
    device: str = "auto",
    runs_dir: str | Path = "runs",
    index: str | Path | None = None,
    index_topk: int = 100,
    nprobe: int | None = None,
    ef_search: int | None = None,
    backend: str = "faiss",
    uri: str | None = None,
    reporter: Reporter | None = None,
) -> dict:
    """Evaluate a trained model on a prepared dataset, or saved features without a model.

    Every evaluation option lives in the recipe's `eval` section (distance, ranks, protocol,
    flip, rerank, query_expansion, seed): the run's recipe for a model, the schema defaults (or
    `recipe`) for a features file, then `overrides`, e.g. `{"eval.rerank.enabled": True}`.
    `data.*` overrides evaluate a run on another prepared dataset (cross-domain); `model.*`
    cannot change.

    Args:
        target: a run folder (its best.pt, else last.pt), a checkpoint, or None for the newest
            run under `runs_dir`. Not with `features`.
        features: a features `.npz` file to score instead of running a model.
        recipe: the recipe of a weights file that carries none (a LightMBN checkpoint); with
            `features`, the recipe whose `eval` section applies.
        overrides: recipe values that win (see `Overrides`).
        split: "test" (query/gallery) or "val" (the validation identities).
        save_features: write the extracted features (with image paths) to this `.npz`.
        visualize: write ranked lists of that many worst and best queries and the CMC curve as
            PNGs to `visualize_dir` (default: beside the run or features file).
        device: where the model runs (auto, cpu or cuda); the precision is `eval.amp`.
        index: with `features`, score its queries against this gallery index (`index_build`)
            from the index's top `index_topk` instead of the dense matrix; a true match the
            index misses counts as ranked last. `nprobe`/`ef_search` set the search breadth,
            `backend`/`uri` select Milvus. The result gains `index` (kind, topk, search,
            matches found) and, when the file's gallery is the index's rows, `exact` (the
            dense evaluation) to compare with.
        reporter: progress of the embedding (silent when None).

    Returns:
        The metrics (see `reidcli.metrics.evaluate.evaluate_features`), with `checkpoint`,
        `split`, `data_root` and `eval_json` for a model, `features_file` when saved, and
        `figures` when drawn. A model's metrics are also written beside its checkpoint: one
        file per prepared dataset and split (`eval.json` for the run's own test split).
    """
    check_device(device)
    from reidcli.engine.evaluation import EvalRequest, evaluate_target

    request = EvalRequest(
        target=target, features=features, recipe=recipe, overrides=as_overrides(overrides),
        split=split, save_features=save_features, visualize=visualize,
        visualize_dir=visualize_dir, device=device, runs_dir=runs_dir, index=index,
        index_topk=index_topk, nprobe=nprobe, ef_search=ef_search, backend=backend, uri=uri,
    )  # fmt: skip
    return evaluate_target(request, reporter or Reporter())


def rerank(
    features_path: str | Path,
    *,
    recipe: str | Path | None = None,
    overrides: Overrides = (),
    out: str | Path | None = None,
) -> dict:
    """k-reciprocal re-ranking of a features file: metrics before and after (under `reranked`).

    The options are the recipe's `eval.rerank` (k1, k2, lambda) and `eval.distance`: schema
    defaults, then `recipe`, then `overrides` (e.g. `{"eval.rerank.k1": 30}`). With `out`, the
    (Q, G) float32 re-ranked distances are written there as `.npy`, streamed block by block.
    """
    from reidcli.metrics.evaluate import run_evaluation
    from reidcli.metrics.features import load_features
    from reidcli.recipe import load_recipe

    cfg = load_recipe(recipe, [*as_overrides(overrides), "eval.rerank.enabled=true"]).eval
    result = run_evaluation(load_features(features_path), cfg, rerank_out=out)
    if out is not None:
        result.metrics["reranked"]["out"] = str(out)
    return result.metrics


def export(
    target: str | Path | None = None,
    *,
    formats: str | tuple[str, ...] | None = None,
    out: str | Path | None = None,
    opset: int | None = None,
    static_batch: int | None = None,
    fp16: bool = False,
    include_preprocessing: bool = False,
    check: bool = True,
    atol: float | None = None,
    min_cos: float | None = None,
    recipe: str | Path | None = None,
    exporter: str = "auto",
    runs_dir: str | Path = "runs",
) -> dict:
    """Export a trained model's embedding to ONNX and/or TorchScript, checked against PyTorch.

    The file takes `images`, (N, 3, H, W) float32 RGB scaled to [0, 1] and normalised with the
    recipe's mean/std (uint8 RGB with `include_preprocessing`), and returns `features`, (N, D),
    exactly `model.embed` with the recipe's eval settings. Metadata (input contract, embedding,
    versions, checkpoint sha256, parity) goes into the file and into `PATH.metadata.json`.

    Args:
        target: a run folder (best.pt, else last.pt), a checkpoint, or None for the newest run.
        formats: "onnx", "torchscript" or both; default the recipe's `export.formats`.
        out: the file to write (one format only); default beside the checkpoint
            (`best.onnx`, `best.torchscript`).
        opset: ONNX opset; default the recipe's `export.opset`.
        static_batch: fix the batch size (ONNX); default dynamic (recipe `export.dynamic_batch`).
        fp16: float16 weights and arithmetic (input and output stay float32).
        include_preprocessing: take uint8 images and scale and normalise inside the graph.
        check: compare the file with the PyTorch model at batch 1 and 7 (or the static batch).
        atol, min_cos: parity tolerances (defaults: the recipe's `export.atol` and 0.9999; with
            fp16 1e-2 and 0.999).
        recipe: the recipe of a weights file that carries none.
        exporter: "auto" (torch.onnx's dynamo exporter, the legacy one where it fails), "dynamo"
            or "legacy".

    Returns:
        {"checkpoint", "checkpoint_sha256", "model", "exports": [{"format", "path",
        "metadata_path", "exporter", "fallback_reason", "opset", "batch", "input_dtype",
        "precision", "embedding_dim", "parity", "seconds"}, ...]}.

    Raises:
        ParityError: the check failed (nothing is written; `.report` holds the figures).
        ExportError: an operator cannot be exported, or the `export` extra is missing.
        RecipeError: invalid options.
    """
    from reidcli.export.pipeline import export_model

    return export_model(
        target, formats=formats, out=out, opset=opset, static_batch=static_batch, fp16=fp16,
        include_preprocessing=include_preprocessing, check=check, atol=atol, min_cos=min_cos,
        recipe=recipe, exporter=exporter, runs_dir=runs_dir,
    )  # fmt: skip


def embed(
    model: str | Path,
    inputs: tuple[str | Path, ...] = (),
    *,
    dataset: str | Path | None = None,
    out: str | Path | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    workers: int | None = None,
    strict: bool = False,
    size: tuple[int, int] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    recipe: str | Path | None = None,
    reporter: Reporter | None = None,
) -> dict:
    """Embed images (or a prepared dataset's query and gallery) with a checkpoint or export.

    Args:
        model: a run folder, a checkpoint, an `.onnx` file or a TorchScript file. Preprocessing
            comes from the recipe or the export metadata.
        inputs: image files, folders (searched recursively) and text files listing image paths.
        dataset: instead of `inputs`, a prepared dataset folder: its query and gallery are
            embedded into a features file that `reid eval --features` reads.
        out: the `.npz` to write (default `features.npz`).
        batch_size: images per batch (default: the recipe's eval batch size, 32 for exports, or
            a file's static batch).
        device: auto, cpu or cuda.
        workers: image-decoding processes (default: the recipe's, 2 for exports).
        strict: an unreadable image is an error instead of being skipped.
        size, mean, std: the input contract of an exported file without metadata.
        recipe: the recipe of a weights file that carries none.
        reporter: progress of the embedding (silent when None).

    Returns:
        {"out", "model", "backend", "num_images", "embedding_dim", "skipped", "seconds",
        "images_per_second"} (and "num_query", "num_gallery" with `dataset`).
    """
    from reidcli.engine.embed import embed_images

    return embed_images(
        model, tuple(inputs), dataset=dataset, out=out, batch_size=batch_size, device=device,
        workers=workers, strict=strict, size=size, mean=mean, std=std, recipe=recipe,
        reporter=reporter,
    )  # fmt: skip


def bench(
    recipe: Recipe | str | Path | None = None,
    *,
    model: str | None = None,
    overrides: Overrides = (),
    quick: bool = False,
    reporter: Reporter | None = None,
) -> dict:
    """Size, throughput and latency of a model in the settings of the recipe's `bench` section.

    Options resolve as everywhere: schema defaults, the recipe file, the `quick` preset, then
    `model` and `overrides` (e.g. `{"bench.amp": True, "bench.batch": [1, 32]}`). The model is
    built with fresh weights (`model.pretrained` is not loaded) and 751-class heads.

    Args:
        recipe: a `Recipe`, a recipe file, or None for the schema defaults.
        model: a catalog model name (sets `model.name`).
        overrides: recipe values that win (see `Overrides`).
        quick: the preset that times LMBN_n on two CPU cores in under a minute (batches 1 and
            2, one warm-up and two timed iterations per row).
        reporter: progress, a row at a time (silent when None).

    Returns:
        The report: {"schema_version", "model", "params", "params_trainable",
        "params_without_classifier", "gmacs", "gflops", "forward_gmacs", "flip",
        "embedding_dim", "input", "settings", "env", "results": [{"mode", "batch", "precision",
        "channels_last", "cudnn_benchmark", "backend", "compile", "images_per_s", "latency_ms":
        {"p50", "p90", "p99"}, "peak_memory_mb", "speedup", "iterations", "error"}]}.
        A row that could not run has `images_per_s` None and its reason in `error`.

    Raises:
        RecipeError: invalid options. DeviceError: a device this machine lacks.
    """
    from reidcli.bench.measure import QUICK, run_bench
    from reidcli.recipe import Recipe as RecipeModel
    from reidcli.recipe import load_recipe, override_recipe

    changes = as_overrides(QUICK) if quick else []
    changes += [f"model.name={model}"] if model is not None else []
    changes += as_overrides(overrides)
    if isinstance(recipe, RecipeModel):
        resolved = override_recipe(recipe, changes)
    else:
        resolved = load_recipe(recipe, changes)
    return run_bench(resolved, reporter)


def compare_bench(
    report: dict | str | Path, baseline: dict | str | Path, *, tolerance: float | None = None
) -> dict:
    """The regression gate: `report` against `baseline` (reports or their JSON files).

    Parameters, GMac and the embedding dimension must be equal; images/s of each row present in
    both may drop by at most `tolerance` percent (default: the report's `bench.tolerance`), and
    is compared only when the device name, torch version, kernel set and thread count match.

    Returns:
        {"passed", "tolerance", "size_mismatches", "timing_compared",
        "timing_not_compared_because", "rows", "regressions", "not_in_baseline", "not_run"}.

    Raises:
        BenchError: a file that is not a bench report of this schema version.
    """
    from reidcli.bench.compare import compare_reports, load_report
    from reidcli.recipe.run import Bench

    current = report if isinstance(report, dict) else load_report(report)
    base = baseline if isinstance(baseline, dict) else load_report(baseline)
    if tolerance is None:
        tolerance = current.get("settings", {}).get("tolerance", Bench().tolerance)
    return compare_reports(current, base, tolerance)


def index_build(
    features: str | Path,
    out: str | Path,
    *,
    kind: str = "auto",
    metric: str | None = None,
    nlist: int | None = None,
    pq_m: int | None = None,
    refine: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int | None = None,
    ef_construction: int | None = None,
    ef_search: int | None = None,
    recall_sample: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
    backend: str = "faiss",
    uri: str | None = None,
) -> dict:
    """Build a searchable gallery from a features file, storing each row's path, pid and camid.

    Args:
        features: a `reid embed` file (`features`, `paths`, optional `pids`, `camids`) or a
            `reid eval --features` file (its gallery side).
        out: the index file (faiss), or the collection name (Milvus).
        kind: "flat" (exact), "hnsw", "ivfpq", or "auto" (flat below 200,000 rows, else ivfpq).
        metric: "cosine" (1 − cos) or "euclidean" (squared L2), as `reid eval` measures;
            default the distance the features file states (`reid embed` of a checkpoint), else
            cosine.
        nlist, pq_m, refine, nprobe: IVF-PQ lists, sub-quantizers (8 bits each), R: the best
            K + (R − 1)·min(K, 10) PQ candidates are re-scored exactly (0: none, and no
            vectors kept), lists searched by default.
        hnsw_m, ef_construction, ef_search: HNSW links per node, build and search beam widths.
        recall_sample: stored rows used as queries to measure an approximate index's recall@10
            against brute force (stored in the metadata).
        seed: seed of the training sample and the recall sample.
        overwrite: replace an existing index.
        backend: "faiss" (one file; the `index` extra) or "milvus" (the `milvus` extra).
        uri: the Milvus server, or a Milvus Lite file (`gallery.db`), with backend "milvus".

    Returns:
        The index's metadata (kind, metric, dim, params, search, count, recall, build_seconds)
        with `index` (where it is) and `index_bytes` (faiss: the index as serialised).

    Raises:
        FeaturesError: an unreadable, empty or malformed features file.
        GalleryIndexError: an existing index without `overwrite`; a missing backend package.
        RecipeError: parameters that do not fit the kind or the data.
    """
    from reidcli.index.ops import build_index

    return build_index(
        features, out, kind=kind, metric=metric, backend=backend, uri=uri, overwrite=overwrite,
        recall_sample=recall_sample, seed=seed, nlist=nlist, pq_m=pq_m, refine=refine,
        nprobe=nprobe, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search,
    )  # fmt: skip


def index_add(
    index: str | Path, features: str | Path, *, backend: str = "faiss", uri: str | None = None
) -> dict:
    """Add a features file's rows to a gallery under new ids; the file is rewritten atomically
    (an interrupted add leaves the previous index). Returns {"added", "count", "before", ...}.

    Raises:
        GalleryIndexError: a missing or corrupt index; features of another width or distance.
    """
    from reidcli.index.ops import add_to_index

    return add_to_index(index, features, backend=backend, uri=uri)


def index_remove(
    index: str | Path,
    *,
    paths_file: str | Path | None = None,
    pid: int | None = None,
    backend: str = "faiss",
    uri: str | None = None,
) -> dict:
    """Delete a person's crops (`pid`) or listed image paths (`paths_file`, one per line).

    The rows leave the file (an HNSW graph is rebuilt without them); a search for their vectors
    afterwards must not find them, else nothing is written (faiss; Milvus deletes at once).
    Returns {"removed", "verified", "before", "count"}.

    Raises:
        GalleryIndexError: none of the rows is in the index (nothing to erase), or a removed
            row is still found.
    """
    from reidcli.index.ops import remove_from_index

    return remove_from_index(index, paths_file=paths_file, pid=pid, backend=backend, uri=uri)


def index_info(index: str | Path, *, backend: str = "faiss", uri: str | None = None) -> dict:
    """A gallery's metadata: kind, metric, dim, params, count, build recall, sizes."""
    from reidcli.index.ops import info, open_gallery

    return info(open_gallery(index, backend, uri))


def search(
    index: str | Path,
    queries: str | Path | Sequence[str | Path],
    *,
    model: str | Path | None = None,
    topk: int = 10,
    nprobe: int | None = None,
    ef_search: int | None = None,
    exclude_same_camera: bool = False,
    out: str | Path | None = None,
    backend: str = "faiss",
    uri: str | None = None,
    device: str = "auto",
    reporter: Reporter | None = None,
) -> dict:
    """The top-K gallery rows of each query.

    Args:
        index: the index file, or the collection name (Milvus).
        queries: a features file (`reid embed` output, or the query side of a `reid eval
            --features` file); or, with `model`, images, folders and lists to embed first.
        model: a run folder, checkpoint or export that embeds image queries.
        topk: hits per query.
        nprobe, ef_search: search breadth of an IVF-PQ / HNSW index (default: the build's).
        exclude_same_camera: drop hits of the query's identity seen by the query's camera (the
            Market-1501 rule); a query of unknown identity drops every hit of its camera.
            Enough candidates are fetched to still return `topk`.
        out: also write the results to a `.json` or `.csv` file.

    Returns:
        {"index", "kind", "metric", "topk", "seconds", "results": [{"path", "pid"?, "camid"?,
        "hits": [{"path", "pid", "camid", "distance"}, ...]}, ...]} (pid/camid -1: unknown).
    """
    from reidcli.index.ops import load_rows, search_index, write_results

    if model is not None:
        from reidcli.index.ops import embed_queries

        rows, stated = embed_queries(model, queries, device, reporter)
        source = "images"
    else:
        if not isinstance(queries, str | Path):
            raise RecipeError("give one features file, or images with a model")
        rows, stated = load_rows(queries, "query")
        source = str(queries)
    result = search_index(
        index, rows, topk=topk, nprobe=nprobe, ef_search=ef_search,
        exclude_same_camera=exclude_same_camera, backend=backend, uri=uri, source=source,
        stated=stated,
    )  # fmt: skip
    if out is not None:
        result["out"] = str(write_results(result["results"], out))
    return result


def as_overrides(overrides: Overrides) -> list[str]:
    """`KEY=VALUE` strings from strings or a {dotted key: value} mapping (values as JSON)."""
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value, default=str)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        raise RecipeError(f"overrides must be a list of KEY=VALUE strings, got {overrides!r}")
    return list(overrides)
