"""Public entry points: ``plan`` (pure), ``apply_plan_`` (in place) and ``prune_`` (both, plus a report)."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence

from prunebench.models.batch import Batch
from prunebench.models.encoder import TransformerEncoder
from prunebench.pruning.apply import apply_plan_, resolve_materialization
from prunebench.pruning.methods import OnStep, compute_plan, run_iterative_
from prunebench.pruning.plan import PrunePlan
from prunebench.pruning.prune_report import PruneReport, build_prune_report, snapshot
from prunebench.pruning.spec import PruneSpec

log = logging.getLogger(__name__)


def _check_inputs(model: TransformerEncoder, spec: PruneSpec) -> None:
    if not isinstance(model, TransformerEncoder):
        raise ValueError(f"expected a TransformerEncoder, got {type(model).__name__}")
    if not isinstance(spec, PruneSpec):
        raise ValueError(f"expected a PruneSpec, got {type(spec).__name__}")


def plan_pruning(model: TransformerEncoder, spec: PruneSpec, calib: Sequence[Batch] | None = None) -> PrunePlan:
    """Compute what ``spec`` would remove from ``model``, without modifying it.

    For ``iterative`` the steps run on a private copy (without ``on_step``), so the plan is the final
    step's selection; replaying it does not replay any fine-tuning.

    Raises:
        ValueError: missing calibration data for the criterion, or an impossible structured request.
    """
    _check_inputs(model, spec)
    if spec.method == "iterative":
        return run_iterative_(copy.deepcopy(model), spec, calib, on_step=None)
    return compute_plan(model, spec, calib)


def prune_(
    model: TransformerEncoder,
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
    model: TransformerEncoder,
    spec: PruneSpec,
    calib: Sequence[Batch] | None = None,
    on_step: OnStep | None = None,
    materialize: str = "default",
) -> tuple[PruneReport, PrunePlan]:
    """Prune ``model`` in place; return the report and the plan that was applied (to save beside the model).

    Args:
        model: the encoder to prune (use ``copy.deepcopy`` first to keep the original).
        spec: the request.
        calib: batches in the shared format; needed by ``wanda`` and ``taylor`` (labelled for taylor).
        on_step: ``on_step(step, sparsity, model)``, called once per step (one step for one-shot methods,
            after materialization); weights it revives are zeroed again.
        materialize: ``default`` (shrink structured plans, zero the rest), ``zeros`` or ``shrink``.

    Returns:
        ``(report, plan)``: ``report.to_dict()`` is what ``prune_report.json`` holds, ``plan.to_dict()``
        replays on a fresh copy of the original model.
    """
    _check_inputs(model, spec)
    before = snapshot(model, groups=spec.structured)
    callback_seconds = 0.0
    start = time.perf_counter()
    if spec.method == "iterative":
        def timed(step: int, sparsity: float, m: TransformerEncoder) -> None:
            nonlocal callback_seconds
            t0 = time.perf_counter()
            on_step(step, sparsity, m)  # type: ignore[misc]  # only wrapped when given
            callback_seconds += time.perf_counter() - t0

        the_plan = run_iterative_(model, spec, calib, timed if on_step is not None else None)
        how = apply_plan_(model, the_plan, materialize)
    else:
        the_plan = compute_plan(model, spec, calib)
        resolve_materialization(the_plan, materialize)  # fail before touching the model
        how = apply_plan_(model, the_plan, materialize)
        if on_step is not None:
            t0 = time.perf_counter()
            on_step(1, spec.sparsity, model)
            callback_seconds += time.perf_counter() - t0
            if how == "zeros":
                apply_plan_(model, the_plan, "zeros")
    wall = time.perf_counter() - start - callback_seconds
    report = build_prune_report(before, model, the_plan, how, wall, callback_seconds)
    log.info("%s: requested sparsity %.3f, measured %.3f (%s)", spec.method, spec.sparsity,
             report.measured_sparsity, how)
    return report, the_plan
