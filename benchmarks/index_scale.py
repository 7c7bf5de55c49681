"""Gallery indexes at scale: build time, memory, query latency and recall@10 against exact.

    python benchmarks/index_scale.py million [--rows 1000000] [--kinds flat,hnsw,ivfpq]
    python benchmarks/index_scale.py msmt

`million`: an identity-clustered synthetic gallery (`reidcli.index.synthetic`, 512-d, 27 crops
per identity, 6 cameras) and 1,000 queries of the same identities. Each index is built through
`reidcli.api.index_build` from a features file, opened fresh, and searched one query at a time
(latency p50/p99) and as a batch (recall@10 against the brute-force top-10). Memory: the faiss
index as serialised, the file size, and the growth of the process's resident set from opening
the index to the end of the searches.

`sweep`: an index built by `million`, opened in a fresh process: resident memory added by
opening it and searching, then latency p50/p99 (single queries) and recall@10 per `--nprobe` /
`--ef-search` value.

`msmt`: an MSMT17-sized test split (82,161 gallery crops, 11,659 queries, 3,060 identities, 15
cameras): rank-1 and mAP of `reid eval --features F --index I` against the dense evaluation.

Prints one JSON document per line; BENCHMARKS.md records the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from reidcli import api
from reidcli.index.gallery import SearchParams, brute_force, prepare_vectors
from reidcli.index.inputs import load_rows
from reidcli.index.store import open_gallery
from reidcli.index.synthetic import clustered

PER_ID = 27
NOISE = 0.7


def rss_mb() -> dict:
    """Resident memory: anonymous (allocated) and file-backed (mapped pages of files)."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key = line.split(":")[0]
            if key in ("RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) / 1024
    return out


def machine() -> dict:
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def write_features(path: Path, data, prefix: str) -> None:
    paths = np.char.add(f"{prefix}/", np.arange(len(data.pids)).astype(str))
    with path.open("wb") as handle:
        np.savez(handle, features=data.features, paths=paths, pids=data.pids, camids=data.camids)


def million(args) -> None:
    work = Path(args.work or tempfile.mkdtemp(prefix="reid-index-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    num_ids = args.rows // PER_ID
    gallery_file, query_file = work / "gallery.npz", work / "queries.npz"
    started = time.perf_counter()
    if not gallery_file.is_file():
        write_features(gallery_file, clustered(args.rows, num_ids, noise=NOISE, stream=1), "g")
    write_features(query_file, clustered(args.queries, num_ids, noise=NOISE, stream=2), "q")
    print(json.dumps({"generated_s": round(time.perf_counter() - started, 1), **machine()}))
    queries, _ = load_rows(query_file, "query")
    q = prepare_vectors(queries.features, "cosine")
    gallery, _ = load_rows(gallery_file, "gallery")
    began = time.perf_counter()
    truth = brute_force(q, prepare_vectors(gallery.features, "cosine"), "cosine", 10)
    exact_s = time.perf_counter() - began
    del gallery
    gc.collect()
    print(json.dumps({"exact_top10_batch_s": round(exact_s, 2)}))
    for kind in args.kinds.split(","):
        out = work / f"{kind}.idx"
        began = time.perf_counter()
        built = api.index_build(gallery_file, out, kind=kind, overwrite=True).to_json()
        build_s = time.perf_counter() - began
        gc.collect()
        before = rss_mb()
        index = open_gallery(out)
        latencies = []
        for row in range(min(args.latency_queries, len(q))):
            tick = time.perf_counter()
            index.search(q[row : row + 1], 10, prepared=True)
            latencies.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        hits = index.search(q, 10, prepared=True)
        batch_s = time.perf_counter() - tick
        found = hits.ids  # row ids are the gallery file's row numbers
        overlap = [np.intersect1d(t, f).size for t, f in zip(truth, found, strict=True)]
        recall = np.mean(overlap) / 10
        lat = np.asarray(latencies) * 1000
        print(json.dumps({
            "kind": kind, "rows": index.count, "params": built["params"],
            "search": built["search"], "build_s": round(build_s, 1),
            "build_recall_at_10": (built.get("recall") or {}).get("recall_at_10"),
            "index_mb": round(built["index_bytes"] / 2**20, 1),
            "file_mb": round(out.stat().st_size / 2**20, 1),
            "rss_anon_growth_mb": round(rss_mb()["RssAnon"] - before["RssAnon"], 1),
            "rss_file_growth_mb": round(rss_mb()["RssFile"] - before["RssFile"], 1),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 3),
            "latency_queries": len(lat),
            "batch_ms_per_query": round(batch_s * 1000 / len(q), 3),
            "recall_at_10": round(float(recall), 4),
        }), flush=True)  # fmt: skip
        del index
        gc.collect()


def truth_file(work: Path, queries: Path, gallery: Path) -> np.ndarray:
    """The brute-force top-10 of the queries, computed once in a child process and cached."""
    path = work / "truth.npy"
    if not path.is_file():
        code = (
            "import numpy as np, sys; from reidcli.index.inputs import load_rows; "
            "from reidcli.index.gallery import SearchParams, brute_force, prepare_vectors as p; "
            "q, _ = load_rows(sys.argv[1], 'query'); g, _ = load_rows(sys.argv[2], 'gallery'); "
            "np.save(sys.argv[3], brute_force(p(q.features, 'cosine'), p(g.features, 'cosine'), "
            "'cosine', 10))"
        )
        subprocess.run([sys.executable, "-c", code, str(queries), str(gallery), str(path)],
                       check=True)  # fmt: skip
    return np.load(path)


def sweep(args) -> None:
    work = Path(args.work)
    truth = truth_file(work, work / "queries.npz", work / "gallery.npz")
    queries, _ = load_rows(work / "queries.npz", "query")
    q = prepare_vectors(queries.features, "cosine")
    gc.collect()
    before = rss_mb()
    index = open_gallery(args.index)
    opened = rss_mb()
    print(json.dumps({"index": str(args.index), "kind": index.kind, "rows": index.count,
                      "index_mb": round(index.memory_bytes() / 2**20, 1),
                      "rss_anon_open_mb": round(opened["RssAnon"] - before["RssAnon"], 1),
                      **machine()}))  # fmt: skip
    knob = "nprobe" if index.kind == "ivfpq" else "ef_search"
    for value in [int(v) for v in args.values.split(",")] if args.values else [None]:
        params = SearchParams(**({knob: value} if value else {}))
        latencies = []
        for row in range(min(args.latency_queries, len(q))):
            tick = time.perf_counter()
            index.search(q[row : row + 1], 10, params, prepared=True)
            latencies.append(time.perf_counter() - tick)
        found = index.search(q, 10, params, prepared=True).ids
        overlap = [np.intersect1d(t, f).size for t, f in zip(truth, found, strict=True)]
        lat = np.asarray(latencies) * 1000
        after = rss_mb()
        print(json.dumps({
            knob: value or index.meta["search"].get(knob),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 3),
            "recall_at_10": round(float(np.mean(overlap)) / 10, 4),
            "rss_anon_total_growth_mb": round(after["RssAnon"] - before["RssAnon"], 1),
            "rss_file_total_growth_mb": round(after["RssFile"] - before["RssFile"], 1),
        }), flush=True)  # fmt: skip


def msmt(args) -> None:
    work = Path(args.work or tempfile.mkdtemp(prefix="reid-index-msmt-"))
    work.mkdir(parents=True, exist_ok=True)
    ids, cams = 3060, 15
    g = clustered(82161, ids, cams=cams, noise=NOISE, stream=1)
    q = clustered(11659, ids, cams=cams, noise=NOISE, stream=2)
    features = work / "msmt_sized.npz"
    gallery_paths = np.char.add("g/", np.arange(len(g.pids)).astype(str))
    query_paths = np.char.add("q/", np.arange(len(q.pids)).astype(str))
    with features.open("wb") as handle:
        np.savez(handle, query_features=q.features, gallery_features=g.features,
                 query_pids=q.pids, gallery_pids=g.pids, query_camids=q.camids,
                 gallery_camids=g.camids, query_paths=query_paths,
                 gallery_paths=gallery_paths)  # fmt: skip
    exact = api.evaluate(features=features).to_json()
    print(json.dumps({"exact": {k: exact[k] for k in ("rank1", "mAP")}, **machine()}))
    for kind in args.kinds.split(","):
        out = work / f"{kind}.idx"
        began = time.perf_counter()
        extra = {"pq_m": args.pq_m} if kind == "ivfpq" and args.pq_m else {}
        built = api.index_build(features, out, kind=kind, overwrite=True, **extra).to_json()
        build_s = time.perf_counter() - began
        began = time.perf_counter()
        nprobe = args.nprobe if kind == "ivfpq" else None
        result = api.evaluate(
            features=features, index=out, index_topk=args.topk, nprobe=nprobe
        ).to_json()
        print(json.dumps({
            "kind": kind, "params": built["params"], "search": result["index"]["search"],
            "build_s": round(build_s, 1), "eval_s": round(time.perf_counter() - began, 1),
            "topk": args.topk, "rank1": result["rank1"], "mAP": result["mAP"],
            "matches_found": result["index"]["matches_found"],
            "matches": result["index"]["matches"],
            "rank1_diff_points": round(100 * (result["rank1"] - exact["rank1"]), 3),
            "mAP_diff_points": round(100 * (result["mAP"] - exact["mAP"]), 3),
        }), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["million", "sweep", "msmt"])
    parser.add_argument("--index", help="sweep: the index file")
    parser.add_argument("--values", help="sweep: comma-separated --nprobe / --ef-search values")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--kinds", default="flat,hnsw,ivfpq")
    parser.add_argument("--topk", type=int, default=300, help="msmt: --index-topk")
    parser.add_argument("--nprobe", type=int, help="msmt: --nprobe of the IVF-PQ evaluation")
    parser.add_argument("--pq-m", type=int, help="msmt: --pq-m of the IVF-PQ index")
    parser.add_argument("--work", help="folder for the features and index files")
    args = parser.parse_args()
    {"million": million, "sweep": sweep, "msmt": msmt}[args.what](args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
