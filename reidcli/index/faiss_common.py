"""What the faiss index folders share: the faiss module, the defaults of IVF-PQ, training its
quantizer, the HNSW graph of a segment, and the compaction thresholds."""

from __future__ import annotations

import math

import numpy as np

from reidcli.errors import GalleryIndexError

# Compaction on its own: past this many segments (the adjacent half with the fewest rows is
# merged), or when a segment's deleted rows pass this share of its rows (it is rewritten
# without them).
MAX_SEGMENTS = 32
MAX_DELETED = 0.25
# The label sections of a segment, in the order they are written.
LABELS = ("ids", "pids", "camids", "paths", "path_hash")


def import_faiss():
    """The faiss module, or an error naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise GalleryIndexError(
            "the faiss backend needs faiss-cpu: pip install 'reidcli[index]'"
        ) from None
    return faiss


def default_nlist(count: int) -> int:
    """A power of two near 4·√N, with at least 39 training rows per list."""
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(count))))
    return int(max(1, min(target, count // 39)))


def default_pq_m(dim: int) -> int:
    """Sub-quantizers: 8 dimensions each (64 bytes per 512-d row), dividing the width."""
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return m


def train_quantizer(faiss, vectors: np.ndarray, meta: dict, seed: int, nlist: int | None = None):
    """An empty IndexIVFPQ trained on a seeded sample of `vectors` (40 rows per list, at least
    256·40 for the codebooks)."""
    dim, params = meta["dim"], meta["params"]
    nlist = nlist or params["nlist"]
    metric = faiss.METRIC_INNER_PRODUCT if meta["metric"] == "cosine" else faiss.METRIC_L2
    quantizer = faiss.IndexFlat(dim, metric)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, params["pq_m"], 8, metric)
    index.own_fields = True
    quantizer.this.disown()
    rng = np.random.default_rng(seed)
    size = min(len(vectors), max(nlist * 40, 256 * 40))
    sample = np.sort(rng.choice(len(vectors), size, replace=False))
    index.cp.seed = index.pq.cp.seed = seed
    index.train(np.ascontiguousarray(vectors[sample]))
    return index, size


def hnsw_graph(faiss, dim, params, metric):
    index = faiss.IndexHNSWFlat(dim, params["hnsw_m"], metric)
    index.hnsw.efConstruction = params["ef_construction"]
    return index


def faiss_writer(faiss, handle):
    return faiss.PyCallbackIOWriter(handle.write)
