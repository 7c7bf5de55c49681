"""`reid adapt` from the Market-1501 subset to the CUHK03 detected subset, against the source-only
model and a model trained with the target's labels (the upper bound).

Usage: python benchmarks/adapt_cuhk03.py [--cuhk03 ../shared/data/cuhk03_detected_subset]
       [--source runs/market-subset] [--seeds 0 1] [--steps prepare,source,adapt,supervised]
       [--supervised-epochs 20]

The source run is `python benchmarks/real_subset.py` (recipes/market_subset_cpu.yaml). Steps:
- prepare: the target's train/ crops as unlabeled crops (`reid prepare folder --unlabeled`), and
  two labeled evaluation datasets written as CSV files (only paths; the images are read in
  place): val/ camera 1 as query and camera 2 as gallery, and the reverse (`II` 00-04 is camera
  1, 05-09 camera 2, SOURCE.md), each with train/ and its labels as the train split (used only
  by the supervised model).
- source: the source model on both evaluation datasets.
- adapt: `reid adapt recipes/adapt_cuhk03_cpu.yaml` per seed (train.seed), then `reid eval` on
  both evaluation datasets and on the Market-1501 subset's test split (does the source domain
  hold?).
- supervised: the upper bound per seed: `reid train recipes/market_subset_cpu.yaml` on the
  train/ labels, started from the source weights, with the adaptation recipe's optimiser and
  epochs (the classifier starts afresh for the 400 identities).
Prints the CPU, every result and the wall time of each adaptation and training, and writes them
to runs/adapt-cuhk03.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from real_subset import ROOT, reid

RECIPE = "recipes/adapt_cuhk03_cpu.yaml"
EVALS = {"c1->c2": "data/cuhk03-c1c2", "c2->c1": "data/cuhk03-c2c1"}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_eval_csv(cuhk03: Path, query_cam: int, out: Path) -> None:
    """train/ with its labels, val/ camera `query_cam` as query and the other as gallery."""
    rows = ["path,pid,camid,split"]
    for path in sorted((cuhk03 / "train").glob("*.jpg")):
        pid, index = (int(x) for x in path.stem.split("_"))
        rows.append(f"{path},{pid + 1},{1 if index < 5 else 2},train")
    for path in sorted((cuhk03 / "val").glob("*.jpg")):
        pid, index = (int(x) for x in path.stem.split("_"))
        cam = 1 if index < 5 else 2
        split = "query" if cam == query_cam else "gallery"
        rows.append(f"{path},{10_000 + pid},{cam},{split}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(rows) + "\n")


def prepare(cuhk03: Path) -> None:
    reid("prepare", "folder", "--root", str(cuhk03 / "train"), "--unlabeled", "--out",
         "data/cuhk03-unlabeled", "--overwrite")  # fmt: skip
    for (name, folder), cam in zip(EVALS.items(), (1, 2), strict=True):
        csv = ROOT / f"{folder}.csv"
        write_eval_csv(cuhk03, cam, csv)
        reid("prepare", "folder", "--root", str(csv), "--out", folder, "--overwrite")
        print(f"prepared {folder} ({name})")


def scores(run: str) -> dict:
    out = {}
    for name, folder in EVALS.items():
        metrics = json.loads(reid("eval", run, "--set", f"data.root={folder}", "--json"))
        out[name] = {"rank1": metrics["rank1"], "mAP": metrics["mAP"]}
        print(f"{run} {name}: rank-1 {metrics['rank1']:.4f}, mAP {metrics['mAP']:.4f}")
    return out


def timed(*args: str) -> float:
    start = time.perf_counter()
    reid(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cuhk03", default=str(ROOT.parent / "shared/data/cuhk03_detected_subset"))
    parser.add_argument("--source", default="runs/market-subset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", default="prepare,source,adapt,supervised")
    parser.add_argument("--supervised-epochs", type=int, default=20)
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    report_path = ROOT / "runs" / "adapt-cuhk03.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report["cpu"] = cpu_name()
    print(f"CPU: {report['cpu']}")
    if "prepare" in steps:
        prepare(Path(args.cuhk03))
    if "source" in steps:
        report["source"] = scores(args.source)
    for seed in args.seeds:
        if "adapt" in steps:
            run = f"runs/adapt-cuhk03-s{seed}"
            sets = ["--set", f"adapt.source={args.source}", "--set", f"train.seed={seed}"]
            seconds = timed("adapt", RECIPE, "--out", run, "--overwrite", *sets)
            market = json.loads(reid("eval", run, "--json"))
            report[f"adapted-s{seed}"] = {
                **scores(run), "market_test": {"rank1": market["rank1"], "mAP": market["mAP"]},
                "minutes": round(seconds / 60, 2),
            }  # fmt: skip
            print(
                f"adapted seed {seed}: {seconds / 60:.1f} min; Market test mAP {market['mAP']:.4f}"
            )
        if "supervised" in steps:
            run = f"runs/cuhk03-supervised-s{seed}"
            seconds = timed(
                "train", "recipes/market_subset_cpu.yaml", "--out", run, "--overwrite",
                "--set", "data.root=data/cuhk03-c1c2", "--set", f"train.seed={seed}",
                "--set", f"model.pretrained={args.source}/last.pt",
                "--set", f"train.epochs={args.supervised_epochs}", "--set", "optim.lr=3.5e-4",
                "--set", "schedule.warmup_epochs=1", "--set", "schedule.per=epoch",
            )  # fmt: skip
            report[f"supervised-s{seed}"] = {**scores(run), "minutes": round(seconds / 60, 2)}
        report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
