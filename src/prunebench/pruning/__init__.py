"""The pruning engine: criterion (scores) -> selection (plan) -> materialization (zeros or shrunk).

Typical use::

    spec = PruneSpec(method="structured", sparsity=0.5, granularity="both")
    report = prune_(model, spec)            # in place; report.to_dict() is JSON
    p = plan_pruning(fresh_model, spec)     # pure; p.to_dict() replays via PrunePlan.from_dict + apply_plan_
"""

from prunebench.pruning.apply import MATERIALIZATIONS, apply_plan_
from prunebench.pruning.criteria import CRITERIA, Criterion, register_criterion
from prunebench.pruning.engine import plan_pruning, prune_, prune_with_plan_
from prunebench.pruning.methods import PLANNERS, OnStep
from prunebench.pruning.persist import PLAN_FILE, REPORT_FILE, save_pruned
from prunebench.pruning.plan import PrunePlan
from prunebench.pruning.prune_report import FIDELITY_ATOL, ModuleRow, PruneReport, check_fidelity
from prunebench.pruning.schedule import SCHEDULE_REGISTRY, SCHEDULES, schedule_values, sparsity_at
from prunebench.pruning.spec import GRANULARITIES, METHODS, SCOPES, MethodInfo, PruneSpec

__all__ = [
    "CRITERIA",
    "FIDELITY_ATOL",
    "GRANULARITIES",
    "MATERIALIZATIONS",
    "METHODS",
    "PLANNERS",
    "PLAN_FILE",
    "REPORT_FILE",
    "SCHEDULES",
    "SCHEDULE_REGISTRY",
    "SCOPES",
    "Criterion",
    "MethodInfo",
    "ModuleRow",
    "OnStep",
    "PrunePlan",
    "PruneReport",
    "PruneSpec",
    "apply_plan_",
    "check_fidelity",
    "plan_pruning",
    "prune_",
    "prune_with_plan_",
    "register_criterion",
    "save_pruned",
    "schedule_values",
    "sparsity_at",
]
