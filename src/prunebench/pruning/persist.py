"""Saving a pruned model together with the plan that made it and the report of what was measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from prunebench.models.io import save_model
from prunebench.pruning.plan import PrunePlan
from prunebench.pruning.prune_report import PruneReport

PLAN_FILE = "plan.json"
REPORT_FILE = "prune_report.json"


def save_pruned(
    model: nn.Module, directory: str | Path, plan: PrunePlan, report: PruneReport,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (loadable with ``load_model``), ``plan.json`` (replays on the original model) and
    ``prune_report.json`` into ``directory``; returns the folder."""
    out = save_model(model, directory, metadata=metadata)
    (out / PLAN_FILE).write_text(json.dumps(plan.to_dict()) + "\n")
    (out / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return out
