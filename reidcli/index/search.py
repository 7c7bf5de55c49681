"""What searching a gallery needs beyond the store: exclusion of the query's own camera, and the
search breadth checked against the index."""

from __future__ import annotations

import numpy as np

from reidcli.errors import RecipeError
from reidcli.index.gallery import UNKNOWN, Gallery, SearchParams


def exclusion(gallery: Gallery, q_pids: np.ndarray, q_camids: np.ndarray, same_pid_only: bool):
    """keep(rows, ids): drop hits seen by the query's camera that are its identity (Market
    rule); with `same_pid_only` False, or for a query of unknown identity, every hit of its
    camera."""

    def keep(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        _, pids, camids = gallery.labels(ids)
        same_cam = camids == q_camids[rows][:, None]
        if not same_pid_only:
            return ~same_cam
        unknown = (q_pids[rows] == UNKNOWN)[:, None]
        return ~(same_cam & (unknown | (pids == q_pids[rows][:, None])))

    return keep


def search_params(gallery: Gallery, nprobe: int | None, ef_search: int | None) -> SearchParams:
    """The search breadth asked for, checked against the index (its kind, its lists).

    Raises:
        RecipeError: a parameter of another kind of index, or more lists than it has.
    """
    if nprobe is not None and gallery.kind != "ivfpq":
        raise RecipeError(f"nprobe applies to ivfpq indexes; this one is {gallery.kind}")
    if ef_search is not None and gallery.kind != "hnsw":
        raise RecipeError(f"ef_search applies to hnsw indexes; this one is {gallery.kind}")
    nlist = gallery.meta["params"].get("nlist")
    if nprobe is not None and nprobe > nlist:
        raise RecipeError(f"nprobe {nprobe} exceeds the index's {nlist} lists")
    return SearchParams(nprobe=nprobe, ef_search=ef_search)
