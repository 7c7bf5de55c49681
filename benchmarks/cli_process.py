"""Whole-process timings of `reid rerank FILE` and `reid eval --features FILE`, with peak memory.

Usage: .venv/bin/python benchmarks/cli_process.py [--repeat 5] [--dir /tmp/reid_bench]
       [--before CHECKOUT]   (also time the same commands from another checkout of reidcli)

Writes two synthetic features files (`synthetic_features.py`): 1,000 × 5,000 and Market size
(3,368 × 15,913), 512-d. Each command is a child process (`python -m reidcli ...`, as the `reid`
script runs it; `benchmarks/rerank_reference.py` for the dense reference re-ranking, in both of
its layouts, `lean` and `published`): wall time from start to exit, peak resident memory from
the child's rusage (`ru_maxrss`; this parent never imports torch, whose resident memory a child
would report as its own, since Linux carries the high-water mark across `exec`), CPU time
(user + system). Ours and the references alternate, and the best and median of `--repeat` runs
are reported with the load average before and after. `reid rerank` runs once more with `--out`
so that its re-ranked matrix can be compared with the references'. The ratios are also printed
against the whole-process figures recorded for the re-ranking reference on the Intel Xeon kind
(11.2 s, 1,586 MB), which mean something only on such a machine.

The package's modules are byte-compiled first (`compileall`), as `pip install` leaves them:
with `PYTHONDONTWRITEBYTECODE` set and no `.pyc` files beside the sources, every process would
compile them from source again (about 0.1 s here), which no installed copy does.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_features import loadavg, write_features

from reidcli.verbs.bench.system import cpu_name

HERE = Path(__file__).resolve().parent
# Whole-process figures recorded on idle machines of the kinds named (not reproducible here):
# the dense numpy re-ranking reference at 1,000 x 5,000 on the Intel Xeon kind (11.2 s,
# 1,586 MB) and the fast-reid Cython evaluation process at Market size.
RECORDED_RERANK_XEON = {"best": 11.2, "median": 11.2, "rss": 1586e6 / 2**20}
RECORDED_FASTREID_EVAL = {"Intel Xeon": 6.3, "AMD Zen 4": 7.4}


def run(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run a child process; its wall time, CPU time and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall": wall, "cpu": cpu, "rss_mib": usage.ru_maxrss / 1024}


def summary(name: str, runs: list[dict]) -> dict:
    walls = [r["wall"] for r in runs]
    out = {
        "best": min(walls),
        "median": statistics.median(walls),
        "cpu": statistics.median(r["cpu"] for r in runs),
        "rss": max(r["rss_mib"] for r in runs),
    }
    print(f"{name:44s} best {out['best']:6.2f} s  median {out['median']:6.2f} s  "
          f"cpu {out['cpu']:6.2f} s  peak RSS {out['rss']:6.0f} MiB")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/reid_bench"))
    parser.add_argument("--before", type=Path, help="a checkout of an earlier reidcli to time too")
    args = parser.parse_args()
    small = write_features("rerank", args.dir / "rerank_1000x5000.npz")
    market = write_features("market", args.dir / "market.npz")
    ours_out, ref_out = args.dir / "ours_rr.npy", args.dir / "reference_rr.npy"
    published_out = args.dir / "reference_published_rr.npy"
    reid = [sys.executable, "-m", "reidcli"]
    commands = {
        "reid rerank (1,000 x 5,000)": [*reid, "rerank", str(small)],
        "dense reference (1,000 x 5,000)": [
            sys.executable, str(HERE / "rerank_reference.py"), str(small), str(ref_out)
        ],
        "dense reference, published layout": [
            sys.executable, str(HERE / "rerank_reference.py"), str(small), str(published_out),
            "--layout", "published",
        ],
        "reid eval --features (Market size)": [*reid, "eval", "--features", str(market)],
    }  # fmt: skip
    envs = dict.fromkeys(commands)
    if args.before:  # the same reid commands with the earlier checkout first on the path
        before_env = {**os.environ, "PYTHONPATH": str(args.before.resolve())}
        for name in ("reid rerank (1,000 x 5,000)", "reid eval --features (Market size)"):
            commands[f"before: {name}"] = commands[name]
            envs[f"before: {name}"] = before_env
    roots = [HERE.parent / "reidcli"] + ([args.before / "reidcli"] if args.before else [])
    for root in roots:  # what pip install does (the .pyc files are git-ignored)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root)], check=True)
    print(f"CPU: {cpu_name()}; numpy {np.__version__}")
    print(f"load average before: {loadavg()}")
    runs = {name: [] for name in commands}
    for _ in range(args.repeat):
        for name, cmd in commands.items():
            # outside the checkout: `python -m` puts the working folder first on sys.path
            runs[name].append(run(cmd, envs[name], cwd=args.dir))
    print(f"load average after: {loadavg()}")
    stats = {name: summary(name, r) for name, r in runs.items()}
    ours = stats["reid rerank (1,000 x 5,000)"]
    references = {
        "lean reference": stats["dense reference (1,000 x 5,000)"],
        "published layout": stats["dense reference, published layout"],
        "figures recorded on Intel Xeon": RECORDED_RERANK_XEON,
    }
    for name, ref in references.items():
        print(f"re-ranking, {name}: reference / reid time {ref['best'] / ours['best']:.1f}x "
              f"(best), {ref['median'] / ours['median']:.1f}x (median); peak memory "
              f"{ours['rss'] / ref['rss']:.2f} of the reference's")  # fmt: skip
    run([*reid, "rerank", str(small), "--out", str(ours_out)])  # once more, writing its matrix
    for name, path in (("lean", ref_out), ("published layout", published_out)):
        diff = np.abs(np.load(ours_out) - np.load(path)).max()
        print(f"re-ranked matrix against the {name} reference's, largest difference: {diff:.2e}")
    market_eval = stats["reid eval --features (Market size)"]
    for machine, seconds in RECORDED_FASTREID_EVAL.items():
        print(f"eval vs fast-reid Cython process on {machine} ({seconds} s): "
              f"{seconds / market_eval['best']:.1f}x (best), "
              f"{seconds / market_eval['median']:.1f}x (median)")  # fmt: skip


if __name__ == "__main__":
    main()
