"""Record the speed gate's baseline, with its tolerance measured, or check the gate many times.

    python benchmarks/gate_baseline.py record [--runs 6] [--busy 3]
    python benchmarks/gate_baseline.py check [--runs 10] [--busy]

Both run the command `make bench-gate` runs (`reid bench $(BENCH_GATE_ARGS)`, read from the
Makefile, with its `ATEN_CPU_CAPABILITY`), as separate processes. `--busy N`: the last N runs
share the machine with a process that keeps one core busy, as a CI neighbour would.

record: each row's speed relative to the reference workload is the median over the runs; its
spread is the largest distance of one run from that median (percent); the gate's tolerance is
three times the largest spread, at least 15 % and at most 40 % (a model twice as slow, -50 %,
must always fail). Written to the baseline with the figures it came from (`gate`).

check: runs the gate against the committed baseline and prints each run's verdict and worst
change, then how many passed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "benchmarks" / "baselines" / "lmbn_n-quick-cpu.json"
REID = [sys.executable, "-m", "reidcli"]
MIN_TOLERANCE, MAX_TOLERANCE, SPREAD_FACTOR = 15.0, 40.0, 3.0


def gate_command() -> tuple[list[str], dict[str, str]]:
    """`BENCH_GATE_ARGS` and `BENCH_GATE_ENV` of the Makefile (the one home of the gate's
    settings)."""
    text = (ROOT / "Makefile").read_text()
    values = {}
    for name in ("BENCH_GATE_ARGS", "BENCH_GATE_ENV"):
        match = re.search(rf"^{name}\s*\?=\s*(.*)$", text, re.MULTILINE)
        if match is None:
            raise SystemExit(f"Makefile: no {name} line")
        values[name] = match.group(1).strip()
    env = dict(item.split("=", 1) for item in shlex.split(values["BENCH_GATE_ENV"]))
    return shlex.split(values["BENCH_GATE_ARGS"]), env


def _spin() -> None:
    while True:
        pass


class Neighbour:
    """A process that keeps one core busy while it is open."""

    def __enter__(self):
        self.process = multiprocessing.Process(target=_spin, daemon=True)
        self.process.start()
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.join()


def run(extra: list[str], busy: bool) -> subprocess.CompletedProcess:
    args, env = gate_command()
    command = [*REID, "bench", *args, *extra]
    environ = {**os.environ, **env}
    if busy:
        with Neighbour():
            return subprocess.run(command, env=environ, capture_output=True, text=True)
    return subprocess.run(command, env=environ, capture_output=True, text=True)


def record(runs: int, busy: int, out: Path) -> None:
    reports = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(runs):
            loaded = index >= runs - busy
            path = Path(folder) / f"run{index}.json"
            done = run(["--out", str(path)], loaded)
            if done.returncode != 0:
                raise SystemExit(f"run {index + 1} failed:\n{done.stderr}")
            reports.append(json.loads(path.read_text()))
            print(f"run {index + 1}/{runs}{' (busy)' if loaded else ''}: " + ", ".join(
                f"{_name(r)} {r['relative_speed']:.3f}" for r in _timed(reports[-1])
            ))  # fmt: skip
    baseline = reports[0]
    spreads = {}
    for row in _timed(baseline):
        same = [next(r for r in _timed(rep) if _key(r) == _key(row)) for rep in reports]
        relative = [r["relative_speed"] for r in same]
        middle = statistics.median(relative)
        row["relative_speed"] = middle
        row["images_per_s"] = statistics.median(r["images_per_s"] for r in same)
        row["reference_images_per_s"] = statistics.median(r["reference_images_per_s"] for r in same)
        spreads[_name(row)] = {
            "relative_speeds": relative,
            "spread_pct": max(abs(v / middle - 1.0) * 100.0 for v in relative),
        }
    worst = max(s["spread_pct"] for s in spreads.values())
    tolerance = min(MAX_TOLERANCE, max(MIN_TOLERANCE, SPREAD_FACTOR * worst))
    if SPREAD_FACTOR * worst > MAX_TOLERANCE:
        print(f"warning: spread {worst:.1f}% is too wide for a gate that must fail at -50%; "
              "time more iterations (BENCH_GATE_ARGS)", file=sys.stderr)  # fmt: skip
    baseline["gate"] = {
        "runs": runs,
        "busy_runs": busy,
        "rows": spreads,
        "largest_spread_pct": worst,
        "tolerance_pct": tolerance,
        "rule": f"{SPREAD_FACTOR:g} x the largest spread, within [{MIN_TOLERANCE:g}, "
        f"{MAX_TOLERANCE:g}] percent",
        "command": f"python benchmarks/gate_baseline.py record --runs {runs} --busy {busy}",
    }
    out.write_text(json.dumps(baseline, indent=2) + "\n")
    print(f"largest spread {worst:.1f}% -> tolerance {tolerance:.1f}%; wrote {out}")


def check(runs: int, busy: bool, baseline: Path) -> None:
    passed = 0
    for index in range(runs):
        done = run(["--compare", str(baseline), "--json"], busy)
        if done.returncode not in (0, 1):
            raise SystemExit(f"run {index + 1} failed:\n{done.stderr}")
        comparison = json.loads(done.stdout)["comparison"]
        changes = [r["change_pct"] for r in comparison["rows"] if r["change_pct"] is not None]
        passed += comparison["passed"]
        print(
            f"run {index + 1}/{runs}{' (busy)' if busy else ''}: "
            f"{'pass' if comparison['passed'] else 'FAIL'}, by {comparison['compared_by']}, "
            f"changes {', '.join(f'{c:+.1f}%' for c in changes)}, tolerance "
            f"{comparison['tolerance']:.1f}%"
        )
    print(f"{passed}/{runs} passed")


def _timed(report: dict) -> list[dict]:
    return [r for r in report["results"] if r.get("relative_speed") is not None]


def _key(row: dict) -> tuple:
    return (row["mode"], row["backend"], row["batch"], row["precision"], row["channels_last"])


def _name(row: dict) -> str:
    return f"{row['mode']} batch {row['batch']} {row['precision']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    rec = sub.add_parser("record", help="measure and write the baseline")
    rec.add_argument("--runs", type=int, default=6)
    rec.add_argument("--busy", type=int, default=3, help="the last N runs with a busy neighbour")
    rec.add_argument("--out", type=Path, default=BASELINE)
    chk = sub.add_parser("check", help="run the gate N times against the baseline")
    chk.add_argument("--runs", type=int, default=10)
    chk.add_argument("--busy", action="store_true", help="with a busy neighbour throughout")
    chk.add_argument("--baseline", type=Path, default=BASELINE)
    args = parser.parse_args()
    args_, env = gate_command()
    sys.path.insert(0, str(ROOT))
    from reidcli.verbs.bench.system import cpu_name

    print(f"CPU: {cpu_name()}")
    print(f"gate: {' '.join(f'{k}={v}' for k, v in env.items())} reid bench {' '.join(args_)}")
    if args.what == "record":
        if not 0 <= args.busy <= args.runs:
            parser.error("--busy must be between 0 and --runs")
        record(args.runs, args.busy, args.out)
    else:
        check(args.runs, args.busy, args.baseline)


if __name__ == "__main__":
    main()
