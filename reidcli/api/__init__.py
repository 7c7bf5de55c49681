"""One function per verb: each takes its options model (or the model's fields as keyword
arguments) and returns a typed result with `to_json()`; the CLI is a thin skin over these.

Importing this package does not import torch; each verb imports what it needs.

Where things go:
- a new verb: its options model in `reidcli.recipe.options` (or a recipe section when the
  option belongs to a run), its result in `reidcli.results`, its orchestration in
  `reidcli.verbs`, a function here, a command module in `reidcli.cli`;
- a new option: a field of that model, and one line in the command where it has a flag;
- a new model backend (an exported format): a writer in `reidcli.export`, a runner in
  `reidcli.inference.runners`.
"""

from reidcli.api.benchmark import bench, bench_gate, compare_bench, read_bench_report
from reidcli.api.deployment import embed, export
from reidcli.api.evaluation import calibrate, check_calibration, evaluate, rerank
from reidcli.api.gallery import (
    index_add,
    index_build,
    index_calibrate,
    index_compact,
    index_info,
    index_rebuild,
    index_remove,
    index_upgrade,
    search,
)
from reidcli.api.overrides import Overrides, as_overrides
from reidcli.api.training import adapt, prepare, train

__all__ = [
    "Overrides", "adapt", "as_overrides", "bench", "bench_gate", "calibrate", "check_calibration",
    "compare_bench", "embed", "evaluate",
    "export", "index_add", "index_build", "index_calibrate", "index_compact", "index_info",
    "index_rebuild", "index_remove", "index_upgrade",
    "prepare",
    "read_bench_report", "rerank", "search", "train",
]  # fmt: skip
