"""One clustering of `reid adapt`: embed the target's crops, Jaccard distances, DBSCAN.

Only the crops' paths are read (`target_frame`): whatever the target's manifest says about
identities never reaches the clustering.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from reidcli.data.manifest import load_manifest
from reidcli.engine.runtime import Runtime
from reidcli.engine.validate import embed_frame
from reidcli.errors import DatasetError, TrainingError
from reidcli.metrics.clustering import (
    auto_eps,
    cluster_sizes,
    dbscan,
    jaccard_pairs,
    kth_neighbour_distance,
)
from reidcli.recipe import Recipe
from reidcli.reporting import Reporter


@dataclass
class PseudoLabels:
    """The clusters an epoch trains on.

    Attributes:
        labels: (N,) int64 cluster of every target crop, -1 for outliers.
        eps: the DBSCAN radius used.
        epoch: the (0-based) epoch at whose start they were computed.
        centroids: (C, E) mean normalised embedding of each cluster, until the memory takes them.
    """

    labels: np.ndarray
    eps: float
    epoch: int
    centroids: torch.Tensor | None = None

    def summary(self) -> dict:
        return {"clustered_at_epoch": self.epoch + 1, "eps": self.eps, **cluster_sizes(self.labels)}


def target_frame(recipe: Recipe) -> pd.DataFrame:
    """The target's train crops as (path, pid = -1, label = -1, camid = -1) rows, in path order.

    Raises:
        DatasetError: the target folder is missing, has no train crops, or too few to cluster.
    """
    cfg = recipe.adapt
    frame = load_manifest(cfg.target)
    paths = frame.loc[frame["split"] == "train", "path"].sort_values(kind="stable")
    clustering = cfg.clustering
    needed = max(clustering.k1 + 1, clustering.k2, clustering.min_samples)
    if len(paths) < needed:
        raise DatasetError(
            f"{cfg.target}: {len(paths)} train crops; clustering needs at least {needed} "
            "(adapt.clustering.k1 + 1)"
        )
    return pd.DataFrame(
        {"path": paths.to_numpy(), "pid": -1, "label": -1, "camid": -1, "split": "train"}
    )


def cluster_target(
    model: nn.Module,
    frame: pd.DataFrame,
    recipe: Recipe,
    runtime: Runtime,
    reporter: Reporter,
    epoch: int,
) -> PseudoLabels:
    """Embed the target crops with the current model and cluster them.

    Raises:
        TrainingError: every crop is an outlier (the message says which eps would help).
    """
    cfg = recipe.adapt.clustering
    n = len(frame)
    reporter.start(f"epoch {epoch + 1}: embedding {n} target crops", n)
    features = embed_frame(model, frame, recipe, runtime, reporter.advance)  # (N, E)
    reporter.finish(f"epoch {epoch + 1}: embedded {n} target crops")
    reporter.start(f"epoch {epoch + 1}: clustering (Jaccard k1={cfg.k1}, DBSCAN)", n)
    pairs = jaccard_pairs(
        features, k1=cfg.k1, k2=cfg.k2, metric=recipe.eval.distance, progress=reporter.advance
    )
    eps = cfg.eps if cfg.eps != "auto" else auto_eps(pairs, cfg.eps_neighbours)
    labels = dbscan(pairs, eps, cfg.min_samples)
    if not (labels >= 0).any():
        raise TrainingError(_no_cluster_message(pairs, eps, cfg.min_samples, n))
    clusters = int(labels.max()) + 1
    if clusters < recipe.data.p:
        raise TrainingError(
            f"the clustering found {clusters} clusters among {n} target crops (eps {eps:.3f}), "
            f"fewer than the data.p ({recipe.data.p}) identities of a batch; lower data.p or "
            "change adapt.clustering.eps"
        )
    result = PseudoLabels(labels, float(eps), epoch, _centroids(features, labels))
    stats = result.summary()
    reporter.finish(
        f"epoch {epoch + 1}: {stats['clusters']} clusters, {stats['outliers']} outliers "
        f"(eps {eps:.3f})"
    )
    return result


def _centroids(features: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    """(C, E) mean of each cluster's L2-normalised features."""
    clustered = labels >= 0
    x = features[clustered] / np.linalg.norm(features[clustered], axis=1, keepdims=True)
    count = int(labels.max()) + 1
    sums = np.zeros((count, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[clustered], x)
    return torch.from_numpy((sums / np.bincount(labels[clustered])[:, None]).astype(np.float32))


def _no_cluster_message(pairs, eps: float, min_samples: int, n: int) -> str:
    head = (
        f"the clustering found no cluster: all {n} target crops are outliers at "
        f"adapt.clustering.eps {eps:.3f} with min_samples {min_samples}"
    )
    kth = kth_neighbour_distance(pairs, min_samples - 1)
    reachable = kth[kth < 1]
    if len(reachable) == 0:
        return (
            f"{head}; no crop has {min_samples - 1} others sharing its k-reciprocal neighbours: "
            "lower adapt.clustering.min_samples or raise adapt.clustering.k1"
        )
    suggested = float(np.quantile(reachable, 0.5))
    return (
        f"{head}; eps {suggested:.3f} would make half of the crops that can be core crops "
        f"core crops (--set adapt.clustering.eps={suggested:.3f})"
    )
