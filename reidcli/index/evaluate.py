"""Market-1501 metrics from a gallery index's top-K instead of the dense distance matrix.

Each query's hits (same identity and camera removed, as the protocol does) give the positions
of the true matches within the top K. A true match the index did not return is placed at the
end of the query's ranking: the figures are what a user of the index gets. For a flat index
they are the exact ones up to rank K and a lower bound beyond it (equal when every match is
found); an approximate index can also skip a nearer non-match, so its figures can differ from
the exact ones either way.
"""

from __future__ import annotations

import logging

import numpy as np

from reidcli.errors import GalleryIndexError, RecipeError
from reidcli.index.gallery import UNKNOWN, Gallery, SearchParams
from reidcli.index.search import exclusion
from reidcli.metrics.features import Features
from reidcli.metrics.rank import summarise_positions, summarize

log = logging.getLogger(__name__)


def _pair_counts(pids: np.ndarray, camids: np.ndarray, q_pids, q_camids):
    """Per query: gallery rows of its identity, and of its identity in its camera."""
    n = len(pids)
    _, pid_code = np.unique(np.concatenate([pids, q_pids]), return_inverse=True)
    pairs = np.stack([np.concatenate([pids, q_pids]), np.concatenate([camids, q_camids])], 1)
    _, pair_code = np.unique(pairs, axis=0, return_inverse=True)
    pid_code, pair_code = pid_code.ravel(), pair_code.ravel()
    same_pid = np.bincount(pid_code[:n], minlength=pid_code.max() + 1)[pid_code[n:]]
    junk = np.bincount(pair_code[:n], minlength=pair_code.max() + 1)[pair_code[n:]]
    return same_pid, junk


def index_metrics(
    features: Features, gallery: Gallery, cfg, *, topk: int, params: SearchParams
) -> dict:
    """Metrics of the features file's queries against the index (its gallery).

    Raises:
        RecipeError: options the index cannot apply (re-ranking, query expansion, cuhk03).
        GalleryIndexError: an index without identities and cameras, or of another width.
    """
    if cfg.rerank.enabled or cfg.query_expansion.enabled or cfg.protocol != "market":
        raise RecipeError(
            "--index evaluates the Market-1501 protocol from the index's top-K: without "
            "re-ranking, query expansion or the cuhk03 protocol"
        )
    if topk < 1:
        raise RecipeError(f"--index-topk must be >= 1, got {topk}")
    gallery.check_features(features.query_features, "query_features", None)
    if cfg.distance != gallery.metric:
        log.warning("the index ranks by %s distance (eval.distance %s is not used)",
                    gallery.metric, cfg.distance)  # fmt: skip
    g_pids, g_camids = gallery.label_table()
    if g_pids.size == 0:
        raise GalleryIndexError("the index is empty")
    if (g_pids == UNKNOWN).any() or (g_camids == UNKNOWN).any():
        raise GalleryIndexError(
            "the index has rows without a person id or camera: build it from a features file "
            "with pids and camids (a `reid eval --features` file)"
        )
    q_pids, q_camids = features.query_pids, features.query_camids
    keep = exclusion(gallery, q_pids, q_camids, same_pid_only=True)
    hits = gallery.search(features.query_features, topk, params, keep)
    _, hit_pids, _ = gallery.labels(hits.ids)
    match = (hit_pids == q_pids[:, None]) & (hits.ids >= 0)
    same_pid, junk = _pair_counts(g_pids, g_camids, q_pids, q_camids)
    n_match = same_pid - junk
    ranked = len(g_pids) - junk  # each query's ranking, same identity and camera removed
    positions = np.zeros((len(q_pids), max(1, int(n_match.max()))), dtype=np.int64)
    found = 0
    for q in range(len(q_pids)):
        slots = np.flatnonzero(match[q])
        missing = n_match[q] - slots.size
        found += slots.size
        tail = ranked[q] - missing + np.arange(missing)
        positions[q, : n_match[q]] = np.concatenate([slots, tail])
    beyond = [k for k in cfg.ranks if k > topk]
    if beyond:
        log.warning("rank-%s lie beyond --index-topk %d: floors, not the exact figures",
                    ", ".join(map(str, beyond)), topk)  # fmt: skip
    scores = summarise_positions(positions, n_match)
    metrics = summarize(scores, len(g_pids), cfg.ranks, q_camids=q_camids)
    metrics |= {"distance": gallery.metric, "protocol": "market"}
    given = {key: value for key, value in vars(params).items() if value is not None}
    metrics["index"] = {
        "kind": gallery.kind, "topk": topk, "rows": len(g_pids),
        "search": {**gallery.meta.get("search", {}), **given},
        "matches_found": found, "matches": int(n_match.sum()),
    }  # fmt: skip
    return metrics


def same_gallery(features: Features, gallery: Gallery) -> bool:
    """Whether the file's gallery holds the index's rows: the same (pid, camid) multiset, and
    the same paths where both have them."""
    g_pids, g_camids = gallery.label_table()
    if len(g_pids) != len(features.gallery_pids):
        return False
    mine = np.lexsort((g_camids, g_pids))
    theirs = np.lexsort((features.gallery_camids, features.gallery_pids))
    if not (np.array_equal(g_pids[mine], features.gallery_pids[theirs])
            and np.array_equal(g_camids[mine], features.gallery_camids[theirs])):  # fmt: skip
        return False
    if features.gallery_paths is None or not hasattr(gallery, "paths"):
        return True
    return bool(np.array_equal(np.sort(gallery.paths.astype(str)),
                               np.sort(features.gallery_paths.astype(str))))  # fmt: skip
