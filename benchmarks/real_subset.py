"""Train from scratch on the real Market-1501 subset and score its query/gallery.

Usage: python benchmarks/real_subset.py [--recipe recipes/market_subset_cpu.yaml]
       [--data ../shared/data/market1501_subset] [--out runs/market-subset] [--set KEY=VALUE ...]

Prepares the subset (read in place; only the manifest is written), trains with the recipe,
evaluates the final model on the subset's test split (1,344 queries, 6,329 gallery images) and
prints the training time, rank-1 and mAP.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def reid(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "reidcli", *args], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"reid {' '.join(args)} failed with exit code {done.returncode}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="recipes/market_subset_cpu.yaml")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/market1501_subset"))
    parser.add_argument("--prepared", default="data/market1501_subset")
    parser.add_argument("--out", default="runs/market-subset")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    reid("prepare", "market1501", "--root", args.data, "--out", args.prepared, "--json")
    sets = [x for o in args.overrides for x in ("--set", o)]
    start = time.perf_counter()
    reid("train", args.recipe, "--out", args.out, "--set", f"data.root={args.prepared}", *sets)
    train_s = time.perf_counter() - start
    metrics = json.loads(reid("eval", args.out, "--json"))
    print(f"training wall time: {train_s / 60:.1f} min")
    print(json.dumps({"train_minutes": round(train_s / 60, 2), **metrics}, indent=2))


if __name__ == "__main__":
    main()
