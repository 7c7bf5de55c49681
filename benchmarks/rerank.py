"""Time and measure peak memory of sparse k-reciprocal re-ranking (k1=20, k2=6, λ=0.3).

Usage: .venv/bin/python benchmarks/rerank.py [--size market|msmt]

market: 3,368 × 15,913, 512-d (synthetic): the full (Q, G) matrix is returned, as the reference.
msmt: 11,659 × 82,161, 512-d: the re-ranked blocks are scored as they come (never the whole
(Q, G) matrix in memory). Each size runs in a fresh child process; its peak resident memory
during the re-ranking (VmHWM, reset just before it, so everything torch, numpy and scipy
allocate counts) is reported beside the resident memory before it (torch alone is ~580 MiB).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_features import loadavg, make_features, peak_rss_mib, reset_peak, rss_mib

LABELS = ("query_pids", "query_camids", "gallery_pids", "gallery_camids")


def child(size: str) -> None:

    from reidcli.metrics.rank import QueryScores, score_block, summarize
    from reidcli.metrics.rerank import iter_rerank, rerank

    f = make_features(size)
    qf, gf = f["query_features"], f["gallery_features"]
    base = rss_mib()
    reset_peak()  # from here VmHWM is the peak of the re-ranking (and, for msmt, the scoring)
    start = time.perf_counter()
    if size == "market":
        out = rerank(qf, gf, metric="cosine")
        seconds = time.perf_counter() - start
        peak = peak_rss_mib()
        scores = score_block(out, *(f[k] for k in LABELS))
    else:
        parts = []
        for s, block in iter_rerank(qf, gf, metric="cosine"):
            rows = slice(s, s + block.shape[0])
            parts.append(score_block(block, *(f[k][rows] for k in LABELS[:2]),
                                     *(f[k] for k in LABELS[2:])))  # fmt: skip
        seconds = time.perf_counter() - start
        peak = peak_rss_mib()
        scores = QueryScores.concat(parts)
    m = summarize(scores, gf.shape[0])
    print(f"{size}: {qf.shape[0]} x {gf.shape[0]}, {qf.shape[1]}-d")
    print(f"re-ranking {seconds:.1f} s; peak RSS during it {peak:.0f} MiB, "
          f"{peak - base:.0f} MiB above the {base:.0f} MiB before it")  # fmt: skip
    print(f"re-ranked rank-1 {m['rank1']:.4f}  mAP {m['mAP']:.4f}  "
          f"(queries {m['num_query']}, skipped {m['num_skipped']})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("market", "msmt"), default="market")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.size)
        return
    print(f"load average before: {loadavg()}")
    subprocess.run([sys.executable, __file__, "--size", args.size, "--child"], check=True)
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
