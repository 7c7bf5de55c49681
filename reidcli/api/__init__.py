"""One function per verb, with typed arguments; the CLI is a thin skin over these.

Importing this package does not import torch; each verb imports what it needs.
"""

from reidcli.api.benchmark import bench, compare_bench
from reidcli.api.deployment import embed, export
from reidcli.api.evaluation import evaluate, rerank
from reidcli.api.gallery import index_add, index_build, index_info, index_remove, search
from reidcli.api.overrides import Overrides, as_overrides
from reidcli.api.training import prepare, train

__all__ = [
    "Overrides", "as_overrides", "bench", "compare_bench", "embed", "evaluate", "export",
    "index_add", "index_build", "index_info", "index_remove", "prepare", "rerank", "search",
    "train",
]  # fmt: skip
