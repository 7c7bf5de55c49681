"""Time the Market-1501 metrics on a Market-sized problem (3,368 × 15,913, 512-d, synthetic).

Usage: .venv/bin/python benchmarks/eval_metrics.py [--repeat 3]

Times (1) CMC/mAP/mINP from a precomputed (Q, G) distance matrix, the reference's input,
(2) the chunked cosine distances alone, (3) `evaluate_features` end to end (distances +
metrics, chunked over queries), (4) the metrics with shuffled gallery identities (a useless
model: most of each list precedes its last true match). Reports this process's peak resident
memory (numpy only: no torch is imported).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_features import loadavg, make_features, peak_rss_mib

from reidcli.metrics.distance import compute_distance
from reidcli.metrics.evaluate import evaluate_features
from reidcli.metrics.features import REQUIRED_KEYS, Labels, as_features
from reidcli.metrics.rank import evaluate_rank


def best_of(repeat: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {loadavg()}")
    feats = as_features(*(make_features("market")[k] for k in REQUIRED_KEYS))
    qf, gf = feats.query_features, feats.gallery_features
    t_dist, dist = best_of(args.repeat, lambda: compute_distance(qf, gf, "cosine"))
    t_rank, m = best_of(args.repeat, lambda: evaluate_rank(dist, feats.query, feats.gallery))
    t_all, _ = best_of(args.repeat, lambda: evaluate_features(feats))
    # a useless model: shuffled gallery identities put the last true match far down every list
    shuffled = np.random.default_rng(0).permutation(feats.gallery_pids)
    weak = Labels(shuffled, feats.gallery_camids)
    t_weak, m_weak = best_of(args.repeat, lambda: evaluate_rank(dist, feats.query, weak))
    print(f"problem: {qf.shape[0]} x {gf.shape[0]}, {qf.shape[1]}-d; best of {args.repeat}")
    print(f"metrics from a distance matrix      {t_rank:6.2f} s")
    print(f"cosine distances (chunked)          {t_dist:6.2f} s")
    print(f"evaluate_features (both, chunked)   {t_all:6.2f} s")
    print(f"metrics, shuffled gallery ids       {t_weak:6.2f} s  (mAP {m_weak['mAP']:.4f})")
    print(f"rank-1 {m['rank1']:.4f}  mAP {m['mAP']:.4f}  mINP {m['mINP']:.4f}  "
          f"skipped {m['num_skipped']}")  # fmt: skip
    print(f"peak RSS {peak_rss_mib():.0f} MiB")
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
