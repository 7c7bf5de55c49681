"""Distance thresholds at a stated false-match rate, measured on labeled features (numpy only).

A pair of crops is a *match* when its distance is below the threshold. A positive pair is two
crops of one identity seen by different cameras; a negative pair is two crops of different
identities (any cameras). The false-match rate (FAR) of a threshold is the share of negative
pairs under it; the true-match rate (TAR) the share of positive pairs under it.

Pairs are query x gallery for a two-sided features file (as `reid search` and the Market-1501
protocol pair them) and every unordered pair of rows for a one-sided one. Rows of an unknown
identity (pid < 0) take no part.

The threshold for a FAR f is the (floor(f*N)+1)-th smallest negative distance: strictly below
it lie at most f*N of the N negatives. A FAR is measurable only when at least
`MIN_FALSE_MATCHES` negative pairs lie under its threshold. Confidence intervals come from a
bootstrap over identities: each replicate draws the identities with replacement and weighs every
pair by how often its identities were drawn (pairs between two draws of one identity are left
out: they are not negatives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reidcli.errors import FeaturesError
from reidcli.metrics.distance import Metric, chunk_rows, pair_distance, prepare, squared_norms

# A FAR is measured only when this many negative pairs lie under its threshold.
MIN_FALSE_MATCHES = 10
# The smallest negatives are kept exactly up to this many times the largest FAR's count (the
# bootstrap reweighs them), and at least KEEP_MIN of them.
KEEP_FACTOR = 4
KEEP_MIN = 100_000
# Negatives drawn uniformly (seeded) for the curve above the kept ones.
CURVE_SAMPLE = 1_000_000
CURVE_POINTS = 48


@dataclass(frozen=True)
class Side:
    """Features of one side of the pairs with each row's identity index and camera."""

    features: np.ndarray  # (N, D) float32
    ids: np.ndarray  # (N,) int64 identity index in 0..num_ids-1
    camids: np.ndarray  # (N,) int64


@dataclass(frozen=True)
class Pairs:
    """The distances of the positive pairs and of the smallest negative pairs, with what the
    bootstrap needs to reweigh them.

    Attributes:
        metric: the distance.
        positives: (P,) sorted float32 distances of the positive pairs.
        positive_ids: (P,) identity index of each.
        negatives: (K,) the K smallest negative distances, sorted.
        negative_ids: (K, 2) identity indices (first side, second side) of each.
        num_negatives: N, every negative pair.
        cover: every negative pair under this distance is in `negatives`.
        sample: sorted distances of negatives drawn uniformly (for the curve).
        first_rows, second_rows: (I,) rows per identity on each side (the same array twice for
            a one-sided file).
        one_sided: pairs are the unordered pairs of one set of rows.
        num_identities, num_cameras: what the pairs came from.
    """

    metric: str
    positives: np.ndarray
    positive_ids: np.ndarray
    negatives: np.ndarray
    negative_ids: np.ndarray
    num_negatives: int
    cover: float
    sample: np.ndarray
    first_rows: np.ndarray
    second_rows: np.ndarray
    one_sided: bool
    num_identities: int
    num_cameras: int

    @property
    def complete(self) -> bool:
        """Whether every negative pair is kept."""
        return len(self.negatives) == self.num_negatives

    @property
    def min_far(self) -> float:
        """The smallest FAR these pairs can measure."""
        return MIN_FALSE_MATCHES / self.num_negatives

    def threshold(self, far: float) -> float:
        """The threshold of `far` on every pair (match: distance < threshold)."""
        count = math.floor(far * self.num_negatives + 1e-9)
        if count < len(self.negatives):
            return float(self.negatives[count])
        return float(self.sample[min(len(self.sample) - 1, int(far * len(self.sample)))])

    def far_at(self, threshold: float) -> float:
        """The share of negative pairs under `threshold` (above the kept ones: estimated from the
        uniform sample)."""
        if threshold <= self.cover:
            return int(np.searchsorted(self.negatives, threshold, "left")) / self.num_negatives
        return float(np.searchsorted(self.sample, threshold, side="left")) / len(self.sample)

    def tar_at(self, threshold: float) -> float:
        """The share of positive pairs under `threshold`."""
        return float(np.searchsorted(self.positives, threshold, side="left")) / len(self.positives)


def identity_index(*pid_arrays: np.ndarray) -> list[np.ndarray]:
    """Each array's pids as indices 0..I-1 of their union (same pid, same index)."""
    union, inverse = np.unique(np.concatenate(pid_arrays), return_inverse=True)
    del union
    out, start = [], 0
    for pids in pid_arrays:
        out.append(inverse[start : start + len(pids)].astype(np.int64))
        start += len(pids)
    return out


def sides(features, pids, camids, other=None) -> tuple[Side, Side | None]:
    """The labeled rows (pid >= 0) of one set, or of two sets (query and gallery), as `Side`s.

    Args:
        features, pids, camids: the first (or only) set.
        other: (features, pids, camids) of the second set, or None for a one-sided file.

    Raises:
        FeaturesError: no labeled row, one identity only, or no identity seen by two cameras.
    """
    sets = [(features, pids, camids)] + ([other] if other is not None else [])
    kept = []
    for feats, p, c in sets:
        p, c = np.asarray(p, np.int64), np.asarray(c, np.int64)
        rows = p >= 0
        kept.append((np.asarray(feats, np.float32)[rows], p[rows], c[rows]))
    all_pids = np.concatenate([k[1] for k in kept])
    if not all_pids.size:
        raise FeaturesError("no row has a person id (pid >= 0): calibration needs labeled features")
    if len(np.unique(all_pids)) < 2:
        raise FeaturesError(
            f"one identity only (pid {int(all_pids[0])}): calibration needs different people"
        )
    ids = identity_index(*(k[1] for k in kept))
    built = [Side(k[0], i, k[2]) for k, i in zip(kept, ids, strict=True)]
    if any(not len(side.ids) for side in built):
        raise FeaturesError("one side (query or gallery) has no labeled row")
    return built[0], (built[1] if len(built) > 1 else None)


def collect_pairs(
    first: Side,
    second: Side | None,
    metric: Metric,
    max_far: float = 0.0,
    below: float | None = None,
    seed: int = 0,
    block_elements: int | None = None,
) -> Pairs:
    """Distances of every positive pair and of the smallest negative pairs, block by block.

    Args:
        first: the query side, or the only set of rows.
        second: the gallery side, or None (then the unordered pairs of `first`).
        metric: cosine (1 - cos) or euclidean (squared), as `reid eval` computes them.
        max_far: the largest FAR that will be asked for: the kept negatives cover
            KEEP_FACTOR times its count.
        below: keep every negative pair under this distance instead (thresholds to measure).
        seed: seed of the uniform negative sample of the curve.
        block_elements: distances per block (default: about 16 MiB).

    Raises:
        FeaturesError: no positive pair (every identity seen by one camera) or no negative one.
    """
    one_sided = second is None
    other = first if second is None else second
    num_ids = int(max(first.ids.max(), other.ids.max())) + 1
    first_rows = np.bincount(first.ids, minlength=num_ids)
    second_rows = np.bincount(other.ids, minlength=num_ids)
    num_neg = round(_negatives(np.ones(num_ids), first_rows, second_rows, one_sided))
    if num_neg <= 0:
        raise FeaturesError("no pair of different identities: calibration needs two or more")
    keep = int(min(num_neg, max(KEEP_MIN, math.ceil(KEEP_FACTOR * max_far * num_neg))))
    bound = np.inf
    if below is not None:
        keep, bound = int(num_neg), float(np.nextafter(np.float32(below), np.float32(np.inf)))
    sample_p = min(1.0, CURVE_SAMPLE / num_neg)
    rng = np.random.default_rng(seed)
    x, y = prepare(first.features, metric), prepare(other.features, metric)
    y_sq = squared_norms(y) if metric == "euclidean" else None
    pos_d, pos_id, samples = [], [], []
    buf_d = np.empty(0, np.float32)
    buf_i = np.empty(0, np.int64)  # flat pair index row * len(y) + col
    rows = chunk_rows(len(y), block_elements)
    for start in range(0, len(x), rows):
        stop = min(len(x), start + rows)
        dist = pair_distance(x[start:stop], y, metric, y_sq)
        same = first.ids[start:stop, None] == other.ids[None, :]
        valid = np.ones_like(same)
        if one_sided:
            valid = np.arange(len(y))[None, :] > np.arange(start, stop)[:, None]
        positive = same & (first.camids[start:stop, None] != other.camids[None, :]) & valid
        negative = ~same & valid
        pos_d.append(dist[positive])
        pos_id.append(np.broadcast_to(first.ids[start:stop, None], same.shape)[positive])
        if sample_p < 1.0:
            samples.append(dist[negative & (rng.random(dist.shape) < sample_p)])
        else:
            samples.append(dist[negative])
        candidates = negative & (dist < bound)
        flat = np.flatnonzero(candidates) + start * len(y)
        buf_d = np.concatenate([buf_d, dist[candidates]])
        buf_i = np.concatenate([buf_i, flat])
        if len(buf_d) > 2 * keep and below is None:
            buf_d, buf_i = _smallest(buf_d, buf_i, keep)
            bound = float(buf_d.max())
    buf_d, buf_i = _smallest(buf_d, buf_i, keep)
    order = np.argsort(buf_d, kind="stable")
    negatives, flat = buf_d[order], buf_i[order]
    neg_ids = np.stack([first.ids[flat // len(y)], other.ids[flat % len(y)]], 1)
    positives = np.concatenate(pos_d)
    if not positives.size:
        raise FeaturesError(
            "no identity is seen by two cameras: calibration needs same-person pairs across "
            "cameras (camids)"
        )
    order = np.argsort(positives, kind="stable")
    cameras = np.union1d(first.camids, other.camids)
    if len(negatives) == num_neg:
        bound = np.inf
    elif below is None:
        bound = float(negatives[-1])
    return Pairs(
        metric, positives[order], np.concatenate(pos_id)[order], negatives, neg_ids, num_neg,
        float(bound),
        np.sort(np.concatenate(samples)), first_rows, second_rows, one_sided, num_ids,
        len(cameras),
    )  # fmt: skip


def _smallest(d: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if len(d) <= k:
        return d, i
    part = np.argpartition(d, k - 1)[:k]
    return d[part], i[part]


def _negatives(m: np.ndarray, first_rows, second_rows, one_sided: bool) -> float:
    """Negative pairs when identity a is drawn m[a] times (pairs between draws of one identity
    left out)."""
    a, b = m * first_rows, m * second_rows
    total = float(a.sum() * b.sum() - (a * b).sum())
    return total / 2 if one_sided else total


@dataclass(frozen=True)
class Level:
    """The threshold of one requested FAR, with what it gives and its bootstrap intervals."""

    far: float
    threshold: float
    tar: float
    false_matches: int
    threshold_ci: tuple[float, float]
    far_ci: tuple[float, float]  # the FAR (on all pairs) at the threshold interval's ends
    tar_ci: tuple[float, float]


def check_levels(pairs: Pairs, fars) -> None:
    """Refuse a FAR these pairs cannot measure.

    Raises:
        FeaturesError: naming the smallest measurable FAR.
    """
    low = [f for f in fars if f * pairs.num_negatives < MIN_FALSE_MATCHES]
    if low:
        raise FeaturesError(
            f"FAR {', '.join(f'{f:g}' for f in low)} cannot be measured on "
            f"{pairs.num_negatives} negative pairs (at least {MIN_FALSE_MATCHES} false matches "
            f"are needed): the smallest measurable FAR is {pairs.min_far:.3g}; calibrate on more "
            "identities or ask for a larger FAR"
        )


def calibrate_levels(
    pairs: Pairs, fars, replicates: int = 200, confidence: float = 0.95, seed: int = 0
) -> list[Level]:
    """The threshold, TAR and bootstrap intervals of each FAR.

    Raises:
        FeaturesError: a FAR below `pairs.min_far`.
    """
    check_levels(pairs, fars)
    fars = [float(f) for f in fars]
    boot_t, boot_tar = _bootstrap(pairs, fars, replicates, seed)
    levels = []
    for j, far in enumerate(fars):
        t = pairs.threshold(far)
        t_lo, t_hi = interval(boot_t[:, j], confidence)
        levels.append(
            Level(far, t, pairs.tar_at(t), int(np.searchsorted(pairs.negatives, t, "left")),
                  (t_lo, t_hi), (pairs.far_at(t_lo), pairs.far_at(t_hi)),
                  interval(boot_tar[:, j], confidence))
        )  # fmt: skip
    return levels


def draws(num_identities: int, replicates: int, seed: int):
    """Each bootstrap replicate's draw counts: identity i drawn m[i] times (float64), seeded."""
    rng = np.random.default_rng(seed)
    uniform = np.full(num_identities, 1.0 / num_identities)
    for _ in range(replicates):
        yield rng.multinomial(num_identities, uniform).astype(np.float64)


def interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` interval of bootstrap samples."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def _bootstrap(pairs: Pairs, fars: list[float], replicates: int, seed: int):
    """(B, F) thresholds and TARs of `replicates` identity resamplings."""
    thresholds = np.empty((replicates, len(fars)))
    tars = np.empty((replicates, len(fars)))
    for r, m in enumerate(draws(pairs.num_identities, replicates, seed)):
        thresholds[r], tars[r] = replicate(pairs, m, fars)
    return thresholds, tars


def replicate(pairs: Pairs, m: np.ndarray, fars) -> tuple[np.ndarray, np.ndarray]:
    """The thresholds and TARs of `fars` when identity i is drawn m[i] times: each pair weighs
    the product of its identities' draws (a positive pair: its identity's draws)."""
    total = _negatives(m, pairs.first_rows, pairs.second_rows, pairs.one_sided)
    cum = np.cumsum(m[pairs.negative_ids[:, 0]] * m[pairs.negative_ids[:, 1]])
    pos_cum = np.cumsum(m[pairs.positive_ids])
    thresholds, tars = np.empty(len(fars)), np.empty(len(fars))
    for j, far in enumerate(fars):
        i = int(np.searchsorted(cum, far * total + 1e-9, side="right"))
        t = float(pairs.negatives[min(i, len(cum) - 1)])  # censored at the largest kept
        below = int(np.searchsorted(pairs.positives, t, side="left"))
        thresholds[j] = t
        tars[j] = pos_cum[below - 1] / pos_cum[-1] if below and pos_cum[-1] else 0.0
    return thresholds, tars


def curve(pairs: Pairs, points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """The ROC at log-spaced FARs from the smallest measurable one towards 1: thresholds and
    TARs (every value finite)."""
    low = min(max(pairs.min_far, 1e-9), 0.5)
    fars = np.geomspace(low, 1.0, points + 1)[:-1]
    thresholds = [pairs.threshold(float(f)) for f in fars]
    tars = [pairs.tar_at(t) for t in thresholds]
    return {"far": [float(f) for f in fars], "threshold": thresholds, "tar": tars}


@dataclass(frozen=True)
class Measured:
    """What a given threshold does on a set of pairs, with bootstrap intervals."""

    threshold: float
    far: float
    tar: float
    far_ci: tuple[float, float]
    tar_ci: tuple[float, float]


def measure(
    pairs: Pairs, thresholds, replicates: int = 200, confidence: float = 0.95, seed: int = 0
) -> list[Measured]:
    """FAR and TAR of fixed thresholds on `pairs` (a calibration checked on other data)."""
    thresholds = [float(t) for t in thresholds]
    far_b = np.empty((replicates, len(thresholds)))
    tar_b = np.empty((replicates, len(thresholds)))
    qa, gb = pairs.negative_ids[:, 0], pairs.negative_ids[:, 1]
    neg_below = [int(np.searchsorted(pairs.negatives, t, "left")) for t in thresholds]
    pos_below = [int(np.searchsorted(pairs.positives, t, "left")) for t in thresholds]
    for r, m in enumerate(draws(pairs.num_identities, replicates, seed)):
        total = _negatives(m, pairs.first_rows, pairs.second_rows, pairs.one_sided)
        neg_w = np.concatenate([[0.0], np.cumsum(m[qa] * m[gb])])
        pos_w = np.concatenate([[0.0], np.cumsum(m[pairs.positive_ids])])
        for j in range(len(thresholds)):
            far_b[r, j] = neg_w[neg_below[j]] / total if total else 0.0
            tar_b[r, j] = pos_w[pos_below[j]] / pos_w[-1] if pos_w[-1] else 0.0
    return [
        Measured(t, pairs.far_at(t), pairs.tar_at(t), interval(far_b[:, j], confidence),
                 interval(tar_b[:, j], confidence))
        for j, t in enumerate(thresholds)
    ]  # fmt: skip
