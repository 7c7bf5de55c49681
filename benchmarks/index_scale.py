"""Gallery indexes at scale: build time, memory, query latency and recall@10 against exact.

    python benchmarks/index_scale.py million [--rows 1000000] [--kinds flat,hnsw,ivfpq]
    python benchmarks/index_scale.py msmt
    python benchmarks/index_scale.py appends [--rows 1000000 --adds 100 --add-rows 1000]

`million`: an identity-clustered synthetic gallery (`reidcli.index.synthetic`, 512-d, 27 crops
per identity, 6 cameras) and 1,000 queries of the same identities. Each index is built through
`reidcli.api.index_build` from a features file, opened fresh, and searched one query at a time
(latency p50/p99) and as a batch (recall@10 against the brute-force top-10). Memory: the faiss
index as serialised, the file size, and the growth of the process's resident set from opening
the index to the end of the searches.

`sweep`: an index built by `million`, opened in a fresh process: resident memory added by
opening it and searching, then latency p50/p99 (single queries) and recall@10 per `--nprobe` /
`--ef-search` value.

`appends`: a gallery that grows. A `--rows` gallery (default 1,000,000 × 512) built as one
index (compaction off), then `--adds` appends of `--add-rows` rows each (default 100 × 1,000),
each through `api.index_add` in this process: seconds and bytes written per add. Then, beside
one build of all the rows: flat, the top-10 of the 1,000 queries compared path by path; IVF-PQ,
both indexes' recall@10 against brute force; memory and latency with every segment and after
`reid index compact` (each in a fresh process: `probe`), and the compaction's time and bytes
written. `--kinds` as for `million`; a last run appends with the default thresholds
(compaction on its own) and reports the adds' times.

`probe`: one index opened in a fresh process: resident memory added by opening it and by the
searches, latency p50/p99 of single queries (top-10).

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
import shutil
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


def disk_bytes(path: Path) -> int:
    """Bytes of an index on disk (its folder's files, or one file)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def io_counters() -> dict:
    """This process's bytes written and read through system calls (/proc/self/io)."""
    with open("/proc/self/io") as handle:
        return {line.split(":")[0]: int(line.split()[1]) for line in handle}


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
            "file_mb": round(disk_bytes(out) / 2**20, 1),
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


def probe(args) -> None:
    queries, _ = load_rows(args.query_file, "query")
    q = prepare_vectors(queries.features, "cosine")
    gc.collect()
    before = rss_mb()
    began = time.perf_counter()
    index = open_gallery(args.index)
    index.search(q[:1], 10, prepared=True)  # what opening loads, and the first search builds
    opened, open_s = rss_mb(), time.perf_counter() - began
    latencies = []
    for row in range(min(args.latency_queries, len(q))):
        tick = time.perf_counter()
        index.search(q[row : row + 1], 10, prepared=True)
        latencies.append(time.perf_counter() - tick)
    lat = np.asarray(latencies) * 1000
    after = rss_mb()
    print(json.dumps({
        "index": str(args.index), "segments": len(getattr(index, "segments", [0])),
        "open_and_first_search_s": round(open_s, 2),
        "rss_anon_open_mb": round(opened["RssAnon"] - before["RssAnon"], 1),
        "rss_anon_total_mb": round(after["RssAnon"] - before["RssAnon"], 1),
        "rss_file_total_mb": round(after["RssFile"] - before["RssFile"], 1),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 3),
    }), flush=True)  # fmt: skip


def probed(index: Path, queries: Path, latency_queries: int) -> dict:
    """`probe` of `index` in a fresh process."""
    done = subprocess.run(
        [sys.executable, __file__, "probe", "--index", str(index), "--query-file", str(queries),
         "--latency-queries", str(latency_queries)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed_adds(index: Path, parts: list[Path]) -> dict:
    seconds, written, compacted = [], [], 0
    for part in parts:
        before, tick = io_counters(), time.perf_counter()
        done = api.index_add(index, part)
        seconds.append(time.perf_counter() - tick)
        written.append(io_counters()["wchar"] - before["wchar"])
        compacted += len(done.compacted)
    s, w = np.asarray(seconds), np.asarray(written) / 1e6
    return {"adds": len(parts), "add_s_p50": round(float(np.median(s)), 3),
            "add_s_max": round(float(s.max()), 3), "add_mb_p50": round(float(np.median(w)), 2),
            "add_mb_max": round(float(w.max()), 2), "compactions": compacted}  # fmt: skip


def appends(args) -> None:
    work = Path(args.work or tempfile.mkdtemp(prefix="reid-index-appends-"))
    work.mkdir(parents=True, exist_ok=True)
    total = args.rows + args.adds * args.add_rows
    num_ids = total // PER_ID
    started = time.perf_counter()
    data = clustered(total, num_ids, noise=NOISE, stream=1)
    paths = np.char.add("g/", np.arange(total).astype(str))

    def save(path: Path, rows: slice, data=data) -> Path:
        with path.open("wb") as handle:
            np.savez(handle, features=data.features[rows], paths=paths[rows],
                     pids=data.pids[rows], camids=data.camids[rows])  # fmt: skip
        return path

    base, whole_file = (
        save(work / "base.npz", slice(0, args.rows)),
        save(work / "all.npz", slice(0, total)),
    )
    parts = [save(work / f"add{k:03d}.npz", slice(args.rows + k * args.add_rows,
                                                  args.rows + (k + 1) * args.add_rows))
             for k in range(args.adds)]  # fmt: skip
    query_file = work / "queries.npz"
    write_features(query_file, clustered(args.queries, num_ids, noise=NOISE, stream=2), "q")
    q = prepare_vectors(load_rows(query_file, "query")[0].features, "cosine")
    truth = brute_force(q, prepare_vectors(data.features, "cosine"), "cosine", 10)
    save = None
    data = None
    gc.collect()
    print(json.dumps({"rows": args.rows, "adds": args.adds, "add_rows": args.add_rows,
                      "generated_s": round(time.perf_counter() - started, 1), **machine()}),
          flush=True)  # fmt: skip

    def recall(index: Path) -> float:
        found = open_gallery(index).search(q, 10, prepared=True).ids
        return round(float(np.mean([np.intersect1d(t, f).size for t, f in
                                    zip(truth, found, strict=True)])) / 10, 4)  # fmt: skip

    for kind in args.kinds.split(","):
        grown, whole = work / f"{kind}-grown.idx", work / f"{kind}-whole.idx"
        tick = time.perf_counter()
        api.index_build(base, grown, kind=kind, overwrite=True, max_segments=0)
        build_s = time.perf_counter() - tick
        adds = timed_adds(grown, parts)
        tick = time.perf_counter()
        api.index_build(whole_file, whole, kind=kind, overwrite=True)
        whole_s = time.perf_counter() - tick
        out = {"kind": kind, "build_base_s": round(build_s, 1), **adds,
               "build_all_s": round(whole_s, 1)}  # fmt: skip
        if kind == "flat":
            a = open_gallery(grown).search(q, 10, prepared=True)
            b = open_gallery(whole).search(q, 10, prepared=True)
            out["same_top10_ids"] = bool(np.array_equal(a.ids, b.ids))
            out["max_distance_diff"] = float(np.nanmax(np.abs(a.distances - b.distances)))
        out["recall_grown"], out["recall_whole"] = recall(grown), recall(whole)
        out["probe_grown"] = probed(grown, query_file, args.latency_queries)
        out["probe_whole"] = probed(whole, query_file, args.latency_queries)
        before, tick = io_counters(), time.perf_counter()
        done = api.index_compact(grown).to_json()
        out["compact_s"] = round(time.perf_counter() - tick, 1)
        out["compact_written_mb"] = round((io_counters()["wchar"] - before["wchar"]) / 1e6, 1)
        out["compact"] = done
        out["probe_compacted"] = probed(grown, query_file, args.latency_queries)
        out["disk_mb"] = round(disk_bytes(grown) / 1e6, 1)
        print(json.dumps(out), flush=True)
        shutil.rmtree(whole)
    if args.default_thresholds:
        grown = work / "flat-default.idx"
        api.index_build(base, grown, kind="flat", overwrite=True)
        adds = timed_adds(grown, parts)
        info = api.index_info(grown).to_json()
        print(json.dumps({"kind": "flat", "thresholds": info["compact"], **adds,
                          "segments_after": len(info["segments"])}), flush=True)  # fmt: skip


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
    parser.add_argument("what", choices=["million", "sweep", "msmt", "appends", "probe"])
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
    parser.add_argument("--adds", type=int, default=100, help="appends: how many adds")
    parser.add_argument("--add-rows", type=int, default=1000, help="appends: rows per add")
    parser.add_argument("--default-thresholds", action=argparse.BooleanOptionalAction,
                        default=True, help="appends: also grow one with compaction on")  # fmt: skip
    parser.add_argument("--query-file", help="probe: the queries' features file")
    args = parser.parse_args()
    verbs = {"million": million, "sweep": sweep, "msmt": msmt, "appends": appends, "probe": probe}
    verbs[args.what](args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
