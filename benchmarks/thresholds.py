"""Calibrated "same person?" thresholds of a trained run, checked where they were not fitted.

Usage: python benchmarks/thresholds.py RUN [--cuhk03 ../shared/data/cuhk03_detected_subset]
       [--out runs/thresholds] [--far 0.01,0.001,0.0001]

1. `reid calibrate RUN`: thresholds on the run's validation identities (prepare its dataset with
   `--val-ids N`).
2. The run's test split embedded (`reid eval RUN --save-features`), the thresholds measured on
   it (`reid calibrate --verify`: FAR and TAR on identities the calibration never saw), and the
   open-set protocol with a quarter of the test identities withheld from the gallery
   (`reid eval --features --open-set`, thresholds from the calibration).
3. The same on another camera network: the CUHK03 detected subset (its `train/` folder's 400
   identities; per identity and camera the first crop is a query, the others the gallery; read
   in place, only a manifest is written), embedded by the same run.

Prints one JSON document with every figure.
"""

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def reid(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "reidcli", *args, "--json"], cwd=ROOT,
                          text=True, stdout=subprocess.PIPE)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"reid {' '.join(args)} failed with exit code {done.returncode}")
    return json.loads(done.stdout)


def cuhk03_csv(source: Path, out: Path) -> Path:
    """`path,pid,camid,split` of the subset: `train/` as the test split (camera 1: images
    00-04, camera 2: 05-09; the first crop of each camera a query when the other camera keeps a
    gallery crop), `val/` as the train split."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for folder, split, offset in (("train", "test", 0), ("val", "train", 10_000)):
        crops: dict[tuple[int, int], list[Path]] = {}
        for path in sorted((source / folder).glob("*.jpg")):
            pid, index = (int(part) for part in path.stem.split("_"))
            crops.setdefault((pid, 1 if index < 5 else 2), []).append(path)
        for (pid, cam), paths in crops.items():
            other = len(crops.get((pid, 3 - cam), []))
            for i, path in enumerate(paths):
                kind = "train"
                if split == "test":
                    # a query needs a gallery crop of its person from the other camera
                    kind = "query" if i == 0 and other >= 2 else "gallery"
                rows.append((str(path.resolve()), pid + offset + 1, cam, kind))
    table = out / "cuhk03_subset.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "pid", "camid", "split"])
        writer.writerows(rows)
    return table


def checked(run: Path, features: Path, calibration: Path) -> dict:
    verify = reid("calibrate", str(features), "--verify", str(calibration))
    open_set = reid("eval", "--features", str(features), "--open-set", "--calibration",
                    str(calibration))  # fmt: skip
    return {"verify": verify, "closed_set": {k: open_set[k] for k in ("rank1", "mAP")},
            "open_set": open_set["open_set"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument(
        "--cuhk03", type=Path, default=ROOT.parent / "shared/data/cuhk03_detected_subset"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs/thresholds")
    parser.add_argument("--far", default="0.01,0.001,0.0001")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    calibration = reid("calibrate", str(args.run), "--far", args.far)
    cal_file = Path(calibration["out"])
    test = args.out / "market_test.npz"
    reid("eval", str(args.run), "--save-features", str(test))
    report = {"calibration": calibration, "market_test": checked(args.run, test, cal_file)}

    table = cuhk03_csv(args.cuhk03, args.out / "cuhk03")
    data = args.out / "cuhk03" / "prepared"
    reid("prepare", "folder", "--root", str(table), "--out", str(data), "--overwrite")
    cuhk = args.out / "cuhk03_test.npz"
    reid("eval", str(args.run), "--set", f"data.root={data}", "--save-features", str(cuhk))
    report["cuhk03"] = checked(args.run, cuhk, cal_file)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
