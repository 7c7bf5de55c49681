"""The regression gate: a bench report against a baseline report (no torch).

Size (parameters, GMac, embedding dimension) must match exactly: they depend only on the model
and its input. Speed is compared row by row, and only where the numbers can be compared at all.
When both reports timed the reference workload (`bench.reference`), each row's speed relative to
it is compared, on any CPU with the same kernel set (`cpu_capability`), thread count and torch
version; an autocast row only where the precision is native on both CPUs or emulated on both.
Otherwise images/s are compared, which needs the same CPU or GPU model too. Where timing cannot
be compared the gate says why and checks size alone.

The tolerance is the caller's, else the one the baseline records (`gate.tolerance_pct`, derived
from the run-to-run spread measured when it was recorded: `benchmarks/gate_baseline.py`), else
25 %.
"""

from __future__ import annotations

import json
from pathlib import Path

from reidcli.errors import BenchError

SCHEMA_VERSION = 1
# What identifies a row: two reports time "the same thing" when all of these agree.
ROW_KEYS = ("mode", "batch", "precision", "channels_last", "cudnn_benchmark", "backend", "compile")
# Compared exactly (they depend on the model and input, not on the machine).
SIZE_KEYS = (
    "model", "input", "flip", "params", "params_without_classifier", "gmacs", "embedding_dim",
)  # fmt: skip
# Timing is compared only where these agree (the kernel set and threads only for CPU reports).
TIMING_ENV_KEYS = ("device", "device_name", "torch")
CPU_TIMING_ENV_KEYS = ("cpu_capability", "threads")
# Relative speeds compare across CPU models (on GPUs the model still has to match).
RELATIVE_ENV_KEYS = ("device", "torch")
# An autocast row's relative speed compares only where both CPUs compute it the same way.
NATIVE_ENV_KEYS = {"bf16": "native_bf16", "fp16": "native_fp16"}
DEFAULT_TOLERANCE = 25.0


def load_report(path: str | Path) -> dict:
    """A bench report written by `reid bench --out` (or `--json`).

    Raises:
        BenchError: the file is missing, not JSON, or not a bench report of this schema version.
    """
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"{path}: no such baseline file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BenchError(f"{path}: not a JSON bench report ({err})") from None
    check_report(report, str(path))
    return report


def check_report(report: object, source: str = "report") -> dict:
    """Raise `BenchError` unless `report` has what the gate reads."""
    if not isinstance(report, dict):
        raise BenchError(f"{source}: a bench report is a JSON object")
    version = report.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BenchError(
            f"{source}: bench schema_version {version!r}; this reid reads {SCHEMA_VERSION} "
            "(write a new baseline with reid bench --out)"
        )
    missing = [k for k in (*SIZE_KEYS, "env", "results") if k not in report]
    if missing:
        raise BenchError(f"{source}: not a bench report (missing {', '.join(missing)})")
    if not isinstance(report["env"], dict) or not isinstance(report["results"], list):
        raise BenchError(f"{source}: `env` must be an object and `results` a list")
    for row in report["results"]:
        if not isinstance(row, dict) or any(k not in row for k in (*ROW_KEYS, "images_per_s")):
            raise BenchError(f"{source}: a result row lacks {', '.join(ROW_KEYS)} or images_per_s")
    return report


def row_key(row: dict) -> tuple:
    return tuple(row[k] if not isinstance(row[k], list) else tuple(row[k]) for k in ROW_KEYS)


def describe_row(row: dict) -> str:
    """`eval torch batch 32 bf16 channels_last` — the settings that tell rows apart."""
    parts = [row["mode"], row["backend"], f"batch {row['batch']}", row["precision"]]
    if row["channels_last"]:
        parts.append("channels_last")
    if row["cudnn_benchmark"]:
        parts.append("cudnn.benchmark")
    if row["compile"]:
        parts.append("compiled")
    return " ".join(parts)


def compare_reports(current: dict, baseline: dict, tolerance: float | None = None) -> dict:
    """Compare `current` with `baseline`; speed may drop by at most `tolerance` percent.

    Returns:
        {"passed", "tolerance", "compared_by" ("relative_speed" or "images_per_s"),
        "size_mismatches": [{key, baseline, current}], "timing_compared",
        "timing_not_compared_because", "rows": [{row, baseline, current, change_pct, regression,
        note}], "rows_not_compared": [descriptions with the reason], "regressions": [row
        descriptions], "not_in_baseline", "not_run"}.
    """
    check_report(current, "current report")
    check_report(baseline, "baseline")
    tolerance = resolve_tolerance(tolerance, baseline)
    if not 0 < tolerance < 100:
        raise BenchError(f"tolerance must be between 0 and 100 percent, got {tolerance}")
    size = [
        {"key": key, "baseline": baseline[key], "current": current[key]}
        for key in SIZE_KEYS
        if baseline[key] != current[key]
    ]
    relative = has_relative_speeds(current) and has_relative_speeds(baseline)
    cpu = current["env"].get("device") == "cpu"
    keys = RELATIVE_ENV_KEYS if relative and cpu else TIMING_ENV_KEYS
    keys += CPU_TIMING_ENV_KEYS if cpu else ()
    env_diff = [
        f"{key} {baseline['env'].get(key)!r} in the baseline, {current['env'].get(key)!r} here"
        for key in keys
        if baseline["env"].get(key) != current["env"].get(key)
    ]
    value = "relative_speed" if relative else "images_per_s"
    base_rows = {row_key(r): r for r in baseline["results"]}
    current_keys = {row_key(r) for r in current["results"]}
    rows, regressions, not_in_baseline, skipped = [], [], [], []
    for row in current["results"]:
        base = base_rows.get(row_key(row))
        if base is None:
            not_in_baseline.append(describe_row(row))
            continue
        if env_diff:
            continue
        reason = _precision_differs(row, baseline["env"], current["env"]) if relative else None
        if reason is not None:
            skipped.append(f"{describe_row(row)}: {reason}")
            continue
        entry = _compare_row(row, base, tolerance, value)
        rows.append(entry)
        if entry["regression"]:
            regressions.append(f"{entry['row']}: {entry['note']}")
    not_run = [describe_row(r) for k, r in base_rows.items() if k not in current_keys]
    return {
        "passed": not size and not regressions,
        "tolerance": tolerance,
        "compared_by": value,
        "size_mismatches": size,
        "timing_compared": not env_diff and bool(rows),
        "timing_not_compared_because": env_diff
        or ([] if rows else ["no row of the baseline could be compared"]),
        "rows": rows,
        "rows_not_compared": skipped,
        "regressions": regressions,
        "not_in_baseline": not_in_baseline,
        "not_run": not_run,
    }


def resolve_tolerance(tolerance: float | None, baseline: dict) -> float:
    """The caller's tolerance, else the baseline's measured one, else `DEFAULT_TOLERANCE`."""
    if tolerance is not None:
        return float(tolerance)
    gate = baseline.get("gate")
    measured = gate.get("tolerance_pct") if isinstance(gate, dict) else None
    if isinstance(measured, int | float) and not isinstance(measured, bool):
        return float(measured)
    return DEFAULT_TOLERANCE


def has_relative_speeds(report: dict) -> bool:
    """Whether every timed row of `report` has its speed relative to the reference workload."""
    timed = [r for r in report["results"] if r.get("images_per_s") is not None]
    return bool(timed) and all(isinstance(r.get("relative_speed"), int | float) for r in timed)


def _precision_differs(row: dict, base_env: dict, env: dict) -> str | None:
    key = NATIVE_ENV_KEYS.get(row["precision"])
    if key is None or env.get("device") != "cpu" or base_env.get(key) == env.get(key):
        return None
    how = {True: "native", False: "emulated", None: "not recorded"}
    return (
        f"{row['precision']} {how.get(base_env.get(key), '?')} in the baseline, "
        f"{how.get(env.get(key), '?')} here"
    )


def best_of(first: dict, second: dict) -> dict:
    """`first` with each row replaced by the same row of `second` where that one is faster: a
    timing regression confirmed by a second run is not a noisy neighbour."""
    again = {row_key(r): r for r in second["results"]}
    value = (
        "relative_speed"
        if has_relative_speeds(first) and has_relative_speeds(second)
        else "images_per_s"
    )
    merged = []
    for row in first["results"]:
        other = again.get(row_key(row))
        faster = (
            other is not None
            and other["images_per_s"] is not None
            and (row["images_per_s"] is None or other[value] > row[value])
        )
        merged.append(dict(other if faster else row))
    add_speedups(merged)
    return {**first, "results": merged}


def add_speedups(results: list[dict]) -> None:
    """Set each row's `speedup`: its images/s against the plain row of its mode and batch (fp32,
    contiguous, cudnn.benchmark off) on the torch backend, or on its own backend when torch was
    not timed."""
    plain = {
        (r["mode"], r["backend"], r["batch"]): r["images_per_s"]
        for r in results
        if r["precision"] == "fp32" and not r["channels_last"] and not r["cudnn_benchmark"]
    }
    for row in results:
        base = plain.get((row["mode"], "torch", row["batch"])) or plain.get(
            (row["mode"], row["backend"], row["batch"])
        )
        row["speedup"] = row["images_per_s"] / base if row["images_per_s"] and base else None


def _compare_row(row: dict, base: dict, tolerance: float, value: str) -> dict:
    """One row: `value` (images_per_s or relative_speed) now against the baseline's."""
    what = "relative speed" if value == "relative_speed" else "images/s"
    entry = {
        "row": describe_row(row),
        "baseline": base[value],
        "current": row.get(value),
        "change_pct": None,
        "regression": False,
        "note": "",
    }
    if base[value] is None:
        entry["note"] = "no timing in the baseline"
    elif row["images_per_s"] is None:
        entry["regression"] = True
        entry["note"] = f"timed in the baseline, fails now ({row.get('error')})"
    else:
        change = 100.0 * (row[value] / base[value] - 1.0)
        entry["change_pct"] = change
        entry["regression"] = change < -tolerance
        detail = (
            f" ({base[value]:.3f} in the baseline, {row[value]:.3f} now; "
            f"{row['images_per_s']:.3g} images/s)"
            if value == "relative_speed"
            else ""
        )
        entry["note"] = f"{change:+.1f}% {what}{detail}" + (
            f" (more than {tolerance:g}% slower)" if entry["regression"] else ""
        )
    return entry
