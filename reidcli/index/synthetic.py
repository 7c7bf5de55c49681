"""Identity-clustered synthetic embeddings: galleries of any size for tests and benchmarks.

Each identity has a random centre; each camera adds its own offset (crops from one camera look
alike, as in real data); each crop adds noise. All three are drawn in a `latent`-dimensional
space and mapped into `dim` dimensions by one fixed random projection, with a little isotropic
noise on top: like a trained model's embeddings, the data has a low intrinsic dimension, and
among thousands of identities some look alike. Rows are L2-normalised float32, so cosine and
euclidean rankings agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidcli.metrics.distance import normalize


@dataclass(frozen=True)
class Clustered:
    """Embeddings with identities and cameras.

    Attributes:
        features: (N, D) float32, rows of unit length.
        pids: (N,) int64 identities.
        camids: (N,) int64 cameras.
    """

    features: np.ndarray
    pids: np.ndarray
    camids: np.ndarray


def clustered(
    num: int,
    num_ids: int,
    *,
    dim: int = 512,
    cams: int = 6,
    noise: float = 0.7,
    camera: float = 0.3,
    latent: int = 32,
    ambient: float = 0.05,
    seed: int = 0,
    stream: int = 1,
    chunk: int = 65536,
) -> Clustered:
    """`num` crops of `num_ids` identities (pids 0..num_ids-1) seen by `cams` cameras.

    Crops of one `seed` share identity centres and camera offsets; `stream` draws another set of
    crops of the same identities (stream 1 for a gallery, 2 for its queries, ...). Generated in
    chunks, so a gallery of millions needs little more memory than its own rows.

    Args:
        num: crops to draw; identities are assigned round-robin (every identity appears when
            num >= num_ids), cameras at random.
        num_ids: identities.
        dim: embedding width.
        cams: cameras.
        noise: per-crop noise scale relative to the identity centre (both of unit variance
            per latent dimension before scaling).
        camera: camera offset scale.
        latent: the dimension the centres, offsets and noise are drawn in.
        ambient: scale of the isotropic noise added in `dim` dimensions.
        seed: seed of the centres and offsets.
        stream: seed of the crops.
    """
    if min(num, num_ids, dim, cams, latent) < 1:
        raise ValueError("num, num_ids, dim, cams and latent must be >= 1")
    fixed = np.random.default_rng([seed, 0])
    centres = fixed.standard_normal((num_ids, latent), dtype=np.float32)
    offsets = fixed.standard_normal((cams, latent), dtype=np.float32)
    projection = fixed.standard_normal((latent, dim), dtype=np.float32) / np.float32(latent**0.5)
    rng = np.random.default_rng([seed, 2, stream])
    pids = (np.arange(num, dtype=np.int64) + rng.integers(num_ids)) % num_ids
    camids = rng.integers(0, cams, size=num, dtype=np.int64)
    features = np.empty((num, dim), dtype=np.float32)
    for start in range(0, num, chunk):
        rows = slice(start, min(num, start + chunk))
        block = rng.standard_normal((rows.stop - start, latent), dtype=np.float32)
        block *= np.float32(noise)
        block += centres[pids[rows]]
        block += np.float32(camera) * offsets[camids[rows]]
        block = block @ projection
        block += np.float32(ambient) * rng.standard_normal(block.shape, dtype=np.float32)
        features[rows] = normalize(block)
    return Clustered(features, pids, camids)
