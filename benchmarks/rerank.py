"""Time and measure peak memory of sparse k-reciprocal re-ranking (k1=20, k2=6, λ=0.3).

Usage: .venv/bin/python benchmarks/rerank.py [--size market|msmt]

market: 3,368 × 15,913, 512-d (synthetic): the full (Q, G) matrix is returned, as the reference.
msmt: 11,659 × 82,161, 512-d: the re-ranked blocks are scored as they come (never the whole
(Q, G) matrix in memory). Each size runs in a fresh child process; its peak resident memory
during the re-ranking (VmHWM, reset just before it, so everything numpy
allocate counts) is reported beside the resident memory before it.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_features import loadavg, make_features, peak_rss_mib, reset_peak, rss_mib


def child(size: str) -> None:
    from reidcli.metrics.features import REQUIRED_KEYS, as_features
    from reidcli.metrics.rank import QueryScores, score_block, summarize
    from reidcli.metrics.rerank import iter_rerank, rerank
    from reidcli.recipe.run import Rerank

    feats = as_features(*(make_features(size)[k] for k in REQUIRED_KEYS))
    qf, gf = feats.query_features, feats.gallery_features
    params = Rerank().model_dump(exclude={"enabled"})  # the schema's k1, k2, lambda_
    base = rss_mib()
    reset_peak()  # from here VmHWM is the peak of the re-ranking (and, for msmt, the scoring)
    start = time.perf_counter()
    if size == "market":
        out = rerank(qf, gf, metric="cosine", **params)
        seconds = time.perf_counter() - start
        peak = peak_rss_mib()
        scores = score_block(out, feats.query, feats.gallery)
    else:
        parts = []
        for s, block in iter_rerank(qf, gf, metric="cosine", **params):
            rows = feats.query[s : s + block.shape[0]]
            parts.append(score_block(block, rows, feats.gallery))
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
