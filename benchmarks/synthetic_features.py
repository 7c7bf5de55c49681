"""Synthetic query/gallery embeddings with re-ID structure, for the metric benchmarks."""

import numpy as np
import torch

SIZES = {
    # queries, gallery items, identities, cameras (Market-1501 and MSMT17 test sets)
    "market": (3368, 15913, 751, 6),
    "msmt": (11659, 82161, 3060, 15),
}


def make_features(size: str, dim: int = 512, seed: int = 0) -> dict:
    """L2-normalised embeddings: identity centre + camera offset + noise; pid 0 distractors."""
    num_q, num_g, ids, cams = SIZES[size]
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(ids + 1, dim, generator=gen)
    cam_shift = 0.7 * torch.randn(cams, dim, generator=gen)

    def draw(n: int, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        camids = torch.randint(0, cams, (n,), generator=gen)
        x = centres[pids] + cam_shift[camids] + 1.6 * torch.randn(n, dim, generator=gen)
        return torch.nn.functional.normalize(x, dim=1), camids

    q_pids = torch.randint(1, ids + 1, (num_q,), generator=gen)
    g_pids = torch.cat(
        [torch.arange(1, ids + 1), torch.randint(0, ids + 1, (num_g - ids,), generator=gen)]
    )
    qf, qc = draw(num_q, q_pids)
    gf, gc = draw(num_g, g_pids)
    return {
        "query_features": qf.numpy(),
        "gallery_features": gf.numpy(),
        "query_pids": q_pids.numpy().astype(np.int64),
        "gallery_pids": g_pids.numpy().astype(np.int64),
        "query_camids": qc.numpy().astype(np.int64),
        "gallery_camids": gc.numpy().astype(np.int64),
    }


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
