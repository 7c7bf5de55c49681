"""Parity of an exported file with the PyTorch model it came from, per sample.

The reference is always the fp32 PyTorch model's `embed` on the evaluation preprocessing of the
same images, so the check answers one question: does the file return the embedding that
evaluation scores?
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reidcli.errors import ParityError


@dataclass(frozen=True)
class BatchParity:
    """Agreement at one batch size.

    Attributes:
        batch: the batch size the exported model ran at.
        max_abs: largest absolute difference over every value of the batch.
        min_cos: smallest per-sample cosine similarity.
        worst: index into the batch of the sample with the largest difference.
        worst_source: what that sample was (an image path, or "synthetic #i").
        passed: max_abs <= atol and min_cos >= min_cos threshold.
    """

    batch: int
    max_abs: float
    min_cos: float
    worst: int
    worst_source: str
    passed: bool

    def as_dict(self) -> dict:
        return {
            "batch": self.batch,
            "max_abs": self.max_abs,
            "min_cos": self.min_cos,
            "worst_sample": {"index": self.worst, "source": self.worst_source},
            "passed": self.passed,
        }


def compare(exported: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample max absolute difference and cosine similarity of two (B, D) arrays.

    Raises:
        ParityError: the shapes differ or the exported output is not finite.
    """
    if exported.shape != reference.shape:
        raise ParityError(
            f"exported output has shape {tuple(exported.shape)}, the PyTorch model's "
            f"{tuple(reference.shape)}"
        )
    a, b = exported.astype(np.float64), reference.astype(np.float64)
    if not np.isfinite(a).all():
        raise ParityError("exported output has non-finite values")
    max_abs = np.abs(a - b).max(axis=1)  # (B,)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    # Two zero vectors agree; one zero vector against a non-zero one does not.
    cos = np.where(norms > 0, dots / np.maximum(norms, 1e-300), np.where(max_abs == 0, 1.0, 0.0))
    return max_abs, cos


def check_parity(
    run_exported: Callable,
    reference: np.ndarray,
    images,
    sources: list[str],
    batches: tuple[int, ...],
    atol: float,
    min_cos: float,
) -> dict:
    """Run the exported model on the first `b` images for each batch size `b`.

    Args:
        run_exported: maps an input batch (the file's contract) to (B, D) features.
        reference: (N, D) embedding of the same N images by the PyTorch model.
        images: (N, 3, H, W) inputs in the file's contract, N >= max(batches).
        sources: what each image is, for naming the worst sample.
        batches: batch sizes to check.
        atol, min_cos: the tolerances.

    Returns:
        {"atol", "min_cos", "passed", "batches": [BatchParity.as_dict(), ...], "worst": ...}.
    """
    rows = []
    for batch in batches:
        max_abs, cos = compare(run_exported(images[:batch]), reference[:batch])
        # The sample furthest outside (or least inside) either tolerance.
        badness = np.maximum(max_abs / atol, (1 - cos) / max(1 - min_cos, 1e-12))
        worst = int(np.argmax(badness))
        worst_abs, worst_cos = float(max_abs.max()), float(cos.min())
        passed = worst_abs <= atol and worst_cos >= min_cos
        rows.append(BatchParity(batch, worst_abs, worst_cos, worst, sources[worst], passed))
    worst_row = max(rows, key=lambda r: (not r.passed, r.max_abs / atol, 1 - r.min_cos))
    return {
        "atol": atol,
        "min_cos": min_cos,
        "passed": all(r.passed for r in rows),
        "batches": [r.as_dict() for r in rows],
        "worst": worst_row.as_dict(),
    }


def failure_message(report: dict) -> str:
    """What failed, naming the worst sample."""
    worst = report["worst"]
    sample = worst["worst_sample"]
    return (
        f"parity check failed: at batch {worst['batch']}, sample {sample['index']} "
        f"({sample['source']}) differs by {worst['max_abs']:.3g} (allowed {report['atol']:.3g}) "
        f"with cosine {worst['min_cos']:.6f} (required {report['min_cos']})"
    )
