"""Synthetic query/gallery embeddings with re-ID structure, for the metric benchmarks (numpy only).

Usage: .venv/bin/python benchmarks/synthetic_features.py SIZE OUT.npz   (writes a features file)
"""

import argparse
from pathlib import Path

import numpy as np

SIZES = {
    # queries, gallery items, identities, cameras
    "rerank": (1000, 5000, 250, 6),  # the whole-process re-ranking benchmark
    "market": (3368, 15913, 751, 6),  # Market-1501 and MSMT17 test sets
    "msmt": (11659, 82161, 3060, 15),
}


def make_features(size: str, dim: int = 512, seed: int = 0) -> dict:
    """L2-normalised float32 embeddings: identity centre + camera offset + noise; pid 0
    distractors; every identity has at least one gallery item. Keys as a features file."""
    num_q, num_g, ids, cams = SIZES[size]
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids + 1, dim), dtype=np.float32)
    cam_shift = 0.7 * rng.standard_normal((cams, dim), dtype=np.float32)

    def draw(pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        camids = rng.integers(0, cams, len(pids))
        x = centres[pids] + cam_shift[camids]
        x += 1.6 * rng.standard_normal(x.shape, dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x, camids

    q_pids = rng.integers(1, ids + 1, num_q)
    g_pids = np.concatenate([np.arange(1, ids + 1), rng.integers(0, ids + 1, num_g - ids)])
    qf, qc = draw(q_pids)
    gf, gc = draw(g_pids)
    return {
        "query_features": qf,
        "gallery_features": gf,
        "query_pids": q_pids.astype(np.int64),
        "gallery_pids": g_pids.astype(np.int64),
        "query_camids": qc.astype(np.int64),
        "gallery_camids": gc.astype(np.int64),
    }


def write_features(size: str, path: str | Path, dim: int = 512, seed: int = 0) -> Path:
    """Write `make_features(size)` as a features `.npz` file (skipped when it exists)."""
    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **make_features(size, dim, seed))
    return path


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib() -> float:
    """This process's current resident memory (VmRSS), MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Reset VmHWM to the current resident memory (Linux: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return fh.read().strip()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", choices=sorted(SIZES))
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(write_features(args.size, args.out))
