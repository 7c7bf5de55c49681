"""The `adapt` section: unsupervised adaptation of a trained model to new cameras (`reid adapt`).

Each re-clustering embeds the target's unlabeled crops, computes their k-reciprocal Jaccard
distances, groups them with DBSCAN (outliers sit the epoch out) and starts a cluster memory
from the clusters' mean embeddings; the epoch then trains with an InfoNCE loss of each crop's
embedding against the memory, which follows the batches with momentum (the cluster-contrast
family of methods). The run's other sections say the rest: `data` the input size, P×K batches
and augmentation (and, with `source_weight`, the labeled source dataset in `data.root`);
`optim`/`schedule` the optimiser (stepped per epoch, since the clustering sets an epoch's
length); `train` the epochs, seed, precision and checkpoints; `eval` the embedding clustered.
"""

from typing import Literal

from pydantic import Field, field_validator

from reidcli.recipe.base import Section


class Clustering(Section):
    """How the target's crops are grouped into pseudo identities."""

    k1: int = Field(
        30, ge=1, le=1000, description="k-reciprocal neighbourhood of the Jaccard distance"
    )
    k2: int = Field(
        6, ge=1, le=1000, description="query-expansion neighbours of the Jaccard distance"
    )
    eps: float | Literal["auto"] = Field(
        "auto",
        description="DBSCAN radius on the Jaccard distance (0..1); auto: the mean distance of "
        "the target's closest pairs (eps_neighbours per crop), re-derived at every clustering",
    )
    eps_neighbours: float = Field(
        6.0,
        gt=0,
        le=10_000,
        description="auto eps: closest pairs per crop whose mean distance is the radius (lower: "
        "tighter clusters and more outliers)",
    )
    min_samples: int = Field(
        4, ge=2, le=1000, description="DBSCAN: crops within eps (itself included) of a core crop"
    )

    @field_validator("eps")
    @classmethod
    def _eps(cls, value):
        if value != "auto" and not 0 < value < 1:
            raise ValueError(f"eps must be 'auto' or between 0 and 1 (exclusive), got {value}")
        return value


class Memory(Section):
    """The cluster memory and its contrastive (InfoNCE) loss."""

    momentum: float = Field(
        0.1, ge=0, lt=1, description="weight of a centroid's old value in each update"
    )
    temperature: float = Field(0.05, gt=0, le=10, description="InfoNCE temperature")


class Adapt(Section):
    """Where adaptation starts and on what, and how it clusters (see the module docstring)."""

    source: str = Field(
        description="run folder (its best.pt, else last.pt) or checkpoint to start from"
    )
    target: str = Field(
        description="prepared data folder of the target cameras' crops (reid prepare folder "
        "--unlabeled); only its train split is read, never a label"
    )
    recluster_every: int = Field(1, ge=1, le=10_000, description="epochs between clusterings")
    clustering: Clustering = Clustering()
    memory: Memory = Memory()
    source_weight: float = Field(
        0.0,
        ge=0,
        le=100,
        description="weight of the recipe's `loss` on labeled source batches (data.root's train "
        "split, one source batch beside each target batch); 0: target only",
    )

    @field_validator("source", "target")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give a path")
        return value
