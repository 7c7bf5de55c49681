"""Dense k-reciprocal re-ranking (Zhong et al., CVPR 2017), written from the paper and SPEC §3.

The baselines of `benchmarks/cli_process.py`: the published algorithm as its numpy version runs
it, with (N, N) arrays for the distances, the ranking and the encodings V, a Python loop over
the items for the k-reciprocal sets and one over the queries for the Jaccard distances (an
inverted index over V's columns). Cosine setting: L2-normalised embeddings, squared euclidean
distance, each column divided by its maximum.

Two layouts of the same steps:
- `lean` (default): float32 throughout, one (N, N) product, ties broken by index (stable
  argsort); a stricter baseline than the code the re-ID toolkits ship.
- `published`: the data layout of the numpy function that LightMBN, torchreid and fast-reid ship:
  it receives the plain euclidean q–g, q–q and g–g matrices (computed here in float32 from the
  embeddings), assembles the (N, N) matrix from them, squares it, keeps V and its k2-average in
  float16, and ranks with numpy's default (unstable) argsort.

Usage: python benchmarks/rerank_reference.py FEATURES.npz OUT.npy [--layout lean|published]
       [--k1 20 --k2 6 --lam 0.3]
Writes the (Q, G) float32 re-ranked distances.
"""

import argparse

import numpy as np


def original_distance(x: np.ndarray) -> np.ndarray:
    """(N, N) squared euclidean distances, each column divided by its maximum (then transposed,
    so row p holds p's normalised distances)."""
    sq = (x * x).sum(1)
    dist = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return (dist / dist.max(axis=0)).T.astype(np.float32)


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain (not squared) euclidean distances between the rows of a and b, float32."""
    dist = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(dist, 0.0))


def published_distance(qf: np.ndarray, gf: np.ndarray) -> np.ndarray:
    """The published function's input and first steps: the q–g, q–q and g–g euclidean matrices
    assembled into one (N, N) matrix, squared, each column divided by its maximum, transposed
    (a view, as there)."""
    q_g, q_q, g_g = euclidean(qf, gf), euclidean(qf, qf), euclidean(gf, gf)
    dist = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)])
    dist = np.power(dist, 2).astype(np.float32)
    return np.transpose(dist / np.max(dist, axis=0))


def reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): items in i's top-(k+1) that also have i in their own top-(k+1)."""
    forward = rank[i, : k + 1]
    backward = rank[forward, : k + 1]
    return forward[(backward == i).any(1)]


def encode(d: np.ndarray, rank: np.ndarray, k1: int, dtype: type) -> np.ndarray:
    """(N, N) V: exp(−d) over each item's expanded k-reciprocal set, normalised (steps 1–3)."""
    n = d.shape[0]
    half = int(np.around(k1 / 2.0))
    v = np.zeros((n, n), dtype=dtype)
    for i in range(n):
        r = reciprocal(rank, i, k1)
        expanded = r
        for c in r:
            rc = reciprocal(rank, c, half)
            if len(np.intersect1d(rc, r)) > 2.0 / 3.0 * len(rc):
                expanded = np.append(expanded, rc)
        expanded = np.unique(expanded)
        weight = np.exp(-d[i, expanded])
        v[i, expanded] = weight / weight.sum()
    return v


def rerank_dense(
    qf: np.ndarray, gf: np.ndarray, k1: int, k2: int, lam: float, layout: str = "lean"
) -> np.ndarray:
    """(Q, G) re-ranked distances of L2-normalised query and gallery embeddings."""
    x = np.concatenate([qf, gf]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q, n = len(qf), len(x)
    if layout == "published":
        d = published_distance(x[:q], x[q:])
        rank = np.argsort(d).astype(np.int32)
        v = encode(d, rank, k1, np.float16)
    else:
        d = original_distance(x)
        rank = np.argsort(d, axis=1, kind="stable").astype(np.int32)
        v = encode(d, rank, k1, np.float32)
    if k2 != 1:  # local query expansion: mean of V over the k2 nearest items
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = v[rank[i, :k2]].mean(0)
        v = v_qe
    del rank
    holders = [np.flatnonzero(v[:, j]) for j in range(n)]  # items with V[:, j] != 0
    jaccard = np.zeros((q, n), dtype=np.float32)
    for i in range(q):
        tmin = np.zeros(n, dtype=np.float32)
        for j in np.flatnonzero(v[i]):
            tmin[holders[j]] += np.minimum(v[i, j], v[holders[j], j])
        jaccard[i] = 1.0 - tmin / (2.0 - tmin)
    final = (1.0 - lam) * jaccard + lam * d[:q]
    return final[:, q:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features")
    parser.add_argument("out")
    parser.add_argument("--layout", choices=("lean", "published"), default="lean")
    parser.add_argument("--k1", type=int, default=20)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--lam", type=float, default=0.3)
    args = parser.parse_args()
    with np.load(args.features) as f:
        qf, gf = f["query_features"], f["gallery_features"]
    out = rerank_dense(qf, gf, args.k1, args.k2, args.lam, args.layout)
    np.save(args.out, out.astype(np.float32))


if __name__ == "__main__":
    main()
