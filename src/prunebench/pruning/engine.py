"""Public entry points: ``plan_pruning`` (pure), ``apply_plan_`` (in place) and ``prune_`` (both, plus a report).

Each takes a model (any model an architecture adapter understands) or its adapter; the method's planner
comes from :data:`prunebench.pruning.methods.PLANNERS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from torch import nn

from prunebench.models.adapters import as_adapter
from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.apply import apply_plan_, resolve_materialization
from prunebench.pruning.methods import PLANNERS, OnStep, run_iterative_
from prunebench.pruning.plan import PrunePlan
from prunebench.pruning.prune_report import PruneReport, build_prune_report, snapshot
from prunebench.pruning.spec import PruneSpec

log = logging.getLogger(__name__)


def _check_inputs(model: nn.Module | ArchAdapter, spec: PruneSpec) -> ArchAdapter:
    """The model's adapter (a ValueError listing the supported architectures if none), after checking spec."""
    if not isinstance(spec, PruneSpec):
        raise ValueError(f"expected a PruneSpec, got {type(spec).__name__}")
    return as_adapter(model)


def plan_pruning(
    model: nn.Module | ArchAdapter, spec: PruneSpec, calib: Sequence[Batch] | None = None
) -> PrunePlan:
    """Compute what ``spec`` would remove from ``model``, without modifying it.

    For ``iterative`` the steps run on a private copy (without ``on_step``), so the plan is the final
    step's selection; replaying it does not replay any fine-tuning.

    Raises:
        ValueError: missing calibration data for the criterion, or an impossible structured request.
    """
    adapter = _check_inputs(model, spec)
    return PLANNERS.get(spec.method)(adapter, spec, calib, None)


def prune_(
    model: nn.Module | ArchAdapter,
    spec: PruneSpec,
    calib: Sequence[Batch] | None = None,
    on_step: OnStep | None = None,
    materialize: str = "default",
) -> PruneReport:
    """Prune ``model`` in place and report what was measured afterwards.

    Same as :func:`prune_with_plan_` without the plan; see there for the arguments.
    """
    return prune_with_plan_(model, spec, calib, on_step, materialize)[0]


def prune_with_plan_(
    model: nn.Module | ArchAdapter,
    spec: PruneSpec,
    calib: Sequence[Batch] | None = None,
    on_step: OnStep | None = None,
    materialize: str = "default",
) -> tuple[PruneReport, PrunePlan]:
    """Prune ``model`` in place; return the report and the plan that was applied (to save beside the model).

    Args:
        model: the model (or its adapter) to prune; use ``copy.deepcopy`` first to keep the original.
        spec: the request.
        calib: batches in the shared format; needed when the criterion says so (``spec.needs_calib``),
            labelled when it needs labels (``spec.needs_labels``).
        on_step: ``on_step(step, sparsity, model)``, called once per step (one step for one-shot methods,
            after materialization); weights it revives are zeroed again.
        materialize: ``default`` (shrink structured plans, zero the rest), ``zeros`` or ``shrink``.

    Returns:
        ``(report, plan)``: ``report.to_dict()`` is what ``prune_report.json`` holds, ``plan.to_dict()``
        replays on a fresh copy of the original model.
    """
    adapter = _check_inputs(model, spec)
    before = snapshot(adapter, groups=spec.structured)
    callback_seconds = 0.0
    start = time.perf_counter()
    if spec.gradual:
        def timed(step: int, sparsity: float, m: nn.Module) -> None:
            nonlocal callback_seconds
            t0 = time.perf_counter()
            on_step(step, sparsity, m)  # type: ignore[misc]  # only wrapped when given
            callback_seconds += time.perf_counter() - t0

        the_plan = run_iterative_(adapter, spec, calib, timed if on_step is not None else None)
        how = apply_plan_(adapter, the_plan, materialize)
    else:
        the_plan = PLANNERS.get(spec.method)(adapter, spec, calib, None)
        resolve_materialization(the_plan, materialize)  # fail before touching the model
        how = apply_plan_(adapter, the_plan, materialize)
        if on_step is not None:
            t0 = time.perf_counter()
            on_step(1, spec.sparsity, adapter.model)
            callback_seconds += time.perf_counter() - t0
            if how == "zeros":
                apply_plan_(adapter, the_plan, "zeros")
    wall = time.perf_counter() - start - callback_seconds
    report = build_prune_report(before, adapter, the_plan, how, wall, callback_seconds)
    log.info("%s: requested sparsity %.3f, measured %.3f (%s)", spec.method, spec.sparsity,
             report.measured_sparsity, how)
    return report, the_plan
