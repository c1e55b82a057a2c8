"""prunebench: prune a transformer, then measure how much faster, smaller and less accurate it really is.

The public API is re-exported here; see the README for a tour and ``docs/DESIGN.md`` for the design.
"""

from prunebench._version import __version__
from prunebench.bench import bench_pair, forward_macs, measure, sweep, time_paired
from prunebench.config import RunConfig
from prunebench.errors import CheckpointError, PrunebenchError
from prunebench.models import (
    EncoderConfig,
    LayerConfig,
    TransformerEncoder,
    count_parameters,
    create_model,
    load_model,
    save_model,
)
from prunebench.pruning import PrunePlan, PruneReport, PruneSpec, apply_plan_, plan_pruning, prune_
from prunebench.report import build_report
from prunebench.results import ResultStore
from prunebench.tasks import build_task, evaluate, finetune, train

__all__ = [
    "CheckpointError",
    "EncoderConfig",
    "LayerConfig",
    "PrunePlan",
    "PruneReport",
    "PruneSpec",
    "PrunebenchError",
    "ResultStore",
    "RunConfig",
    "TransformerEncoder",
    "__version__",
    "apply_plan_",
    "bench_pair",
    "build_report",
    "build_task",
    "count_parameters",
    "create_model",
    "evaluate",
    "finetune",
    "forward_macs",
    "load_model",
    "measure",
    "plan_pruning",
    "prune_",
    "save_model",
    "sweep",
    "time_paired",
    "train",
]
