"""prunebench: prune a transformer, then measure how much faster, smaller and less accurate it really is.

The public API is re-exported here; see the README for a tour and ``docs/DESIGN.md`` for the design.

The names are imported on first use (PEP 562): importing the package (which every ``prunebench`` command,
``prunebench --version`` included, does first) must not import torch, which alone takes seconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prunebench._version import __version__

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
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

#: Public name -> the module that defines it (imported when the name is first read).
_EXPORTS = {
    **dict.fromkeys(("bench_pair", "forward_macs", "measure", "sweep", "time_paired"), "prunebench.bench"),
    "RunConfig": "prunebench.config",
    **dict.fromkeys(("CheckpointError", "PrunebenchError"), "prunebench.errors"),
    **dict.fromkeys(("EncoderConfig", "LayerConfig", "TransformerEncoder", "count_parameters", "create_model",
                     "load_model", "save_model"), "prunebench.models"),
    **dict.fromkeys(("PrunePlan", "PruneReport", "PruneSpec", "apply_plan_", "plan_pruning", "prune_"),
                    "prunebench.pruning"),
    "build_report": "prunebench.report",
    "ResultStore": "prunebench.results",
    **dict.fromkeys(("build_task", "evaluate", "finetune", "train"), "prunebench.tasks"),
}

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


def __getattr__(name: str) -> Any:
    """The public name ``name``, imported from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prunebench' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
