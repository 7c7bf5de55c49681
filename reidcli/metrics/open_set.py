"""Open-set evaluation: some query identities are withheld from the gallery, and a threshold on
the nearest distance decides whether a query's person is in it (numpy only).

For each threshold t:
- DIR (detection and identification rate): the share of known queries (their identity is in
  the gallery) whose nearest gallery item is of their identity and nearer than t;
- unknown rejected: the share of unknown queries (identity withheld) whose nearest gallery item
  is at t or farther; 1 minus it is the open-set false-accept rate.

Gallery items of the query's identity seen by the query's camera are left out (Market-1501).
Thresholds come from a calibration (pair false-match rates measured elsewhere), or are set on
the unknown queries themselves at open-set false-accept rates (then they are fitted to the data
they are scored on: an optimistic bound, said so in the result).
"""

from __future__ import annotations

import math

import numpy as np

from reidcli.errors import FeaturesError
from reidcli.metrics.distance import Metric, iter_distance_chunks
from reidcli.metrics.features import Features, valid_queries


def withheld_identities(feats: Features, count: int | None, seed: int) -> np.ndarray:
    """The query identities withheld from the gallery: `count` (default a quarter) of those
    that can be scored, drawn with `seed`.

    Raises:
        FeaturesError: fewer than two scorable identities, or `count` leaves none known.
    """
    scorable = np.unique(feats.query_pids[valid_queries(feats.query, feats.gallery)])
    if len(scorable) < 2:
        raise FeaturesError(
            f"open-set evaluation needs two or more query identities in the gallery, got "
            f"{len(scorable)}"
        )
    count = max(1, round(len(scorable) / 4)) if count is None else count
    if count >= len(scorable):
        raise FeaturesError(
            f"unknown_ids {count} would leave no known identity: {len(scorable)} query "
            "identities can be scored"
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(scorable, size=count, replace=False))


def nearest(feats: Features, unknown: np.ndarray, metric: Metric) -> dict[str, np.ndarray]:
    """The nearest gallery item of every query once the `unknown` identities left the gallery.

    Returns:
        known: (Q,) bool, a scorable query of a kept identity; unknown: (Q,) bool, a query of a
        withheld identity; distance: (Q,) the nearest distance (inf when nothing is left);
        correct: (Q,) whether the nearest item is of the query's identity.
    """
    keep = ~np.isin(feats.gallery_pids, unknown)
    g_pids, g_cams = feats.gallery_pids[keep], feats.gallery_camids[keep]
    q_pids, q_cams = feats.query_pids, feats.query_camids
    dist_min = np.full(len(q_pids), np.inf)
    correct = np.zeros(len(q_pids), bool)
    for start, block in iter_distance_chunks(
        feats.query_features, feats.gallery_features[keep], metric
    ):
        rows = slice(start, start + len(block))
        same = q_pids[rows, None] == g_pids[None, :]
        block = np.where(same & (q_cams[rows, None] == g_cams[None, :]), np.inf, block)
        if block.shape[1]:
            j = np.argmin(block, axis=1)
            dist_min[rows] = block[np.arange(len(block)), j]
            correct[rows] = same[np.arange(len(block)), j] & np.isfinite(dist_min[rows])
    unknown_q = np.isin(q_pids, unknown)
    known_q = valid_queries(feats.query, feats.gallery) & ~unknown_q
    return {"known": known_q, "unknown": unknown_q, "distance": dist_min, "correct": correct}


def open_set_rates(found: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
    """DIR, unknown rejection and open-set false-accept rate at one threshold."""
    d, known, unknown = found["distance"], found["known"], found["unknown"]
    accepted = d < threshold
    dir_ = float((found["correct"] & accepted & known).sum() / max(1, known.sum()))
    rejected = float((~accepted & unknown).sum() / max(1, unknown.sum()))
    return {"dir": dir_, "unknown_rejected": rejected, "false_accept": 1.0 - rejected}


def query_thresholds(found: dict[str, np.ndarray], fars) -> tuple[list[tuple[float, float]], list]:
    """Thresholds set on the unknown queries at open-set false-accept rates: (far, threshold)
    for each measurable one (at least one unknown query accepted), and the others."""
    nearest_unknown = np.sort(found["distance"][found["unknown"]])
    count = len(nearest_unknown)
    kept, left_out = [], []
    for far in fars:
        allowed = math.floor(far * count + 1e-9)
        if allowed < 1 or allowed >= count:
            left_out.append(far)
            continue
        kept.append((float(far), float(nearest_unknown[allowed])))
    return kept, left_out


def evaluate_open_set(
    feats: Features,
    metric: Metric,
    unknown_ids: int | None,
    seed: int,
    calibrated: list[tuple[float, float]] | None,
    fars=(0.1, 0.01, 0.001),
) -> dict:
    """The open-set protocol on a features file (see the module).

    Args:
        calibrated: (pair FAR, threshold) of a calibration, or None to set thresholds on the
            unknown queries at the open-set false-accept rates `fars`.
    """
    unknown = withheld_identities(feats, unknown_ids, seed)
    found = nearest(feats, unknown, metric)
    if calibrated is not None:
        levels, left_out, source = calibrated, [], "calibration"
    else:
        levels, left_out = query_thresholds(found, fars)
        source = "unknown queries"
    known = found["known"]
    return {
        "unknown_ids": len(unknown), "seed": seed, "identities_withheld": unknown.tolist(),
        "known_queries": int(known.sum()), "unknown_queries": int(found["unknown"].sum()),
        "gallery_rows": int((~np.isin(feats.gallery_pids, unknown)).sum()),
        "rank1_known": float((found["correct"] & known).sum() / max(1, known.sum())),
        "threshold_source": source, "fars_not_measurable": [float(f) for f in left_out],
        "thresholds": [{"far": far, "threshold": t, **open_set_rates(found, t)}
                       for far, t in levels],
    }  # fmt: skip
