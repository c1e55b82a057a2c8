"""Planners: one per method, registered in :data:`PLANNERS` under the method's name.

A planner is ``planner(adapter, spec, calib, prior) -> PrunePlan``: it scores with the spec's criterion
(:mod:`criteria`), selects with :mod:`select`, and never modifies the model. ``prior`` (used by the
iterative loop) is the previous step's plan: whatever it removed is removed again, so masks only grow.
The gradual method (``iterative``) is the loop :func:`run_iterative_` over its base method's planner.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from prunebench.models.adapters import adapter_for, as_adapter
from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.apply import apply_plan_
from prunebench.pruning.criteria import get_criterion
from prunebench.pruning.plan import PrunePlan
from prunebench.pruning.schedule import schedule_values
from prunebench.pruning.select import global_masks, layer_masks, nm_masks, prune_count, row_masks, select_groups
from prunebench.pruning.spec import PruneSpec
from prunebench.registry import Registry

log = logging.getLogger(__name__)

#: ``on_step(step, sparsity, model)``: called after each pruning step (recovery fine-tuning plugs in here).
OnStep = Callable[[int, float, nn.Module], None]
#: ``planner(adapter, spec, calib, prior)`` -> the plan of one step of ``spec``.
Planner = Callable[[ArchAdapter, PruneSpec, "Sequence[Batch] | None", "PrunePlan | None"], PrunePlan]
#: ``select(scores, spec)`` -> keep-masks: how an unstructured method turns weight scores into masks.
MaskSelector = Callable[[dict[str, torch.Tensor], PruneSpec], dict[str, torch.Tensor]]

PLANNERS: Registry[Planner] = Registry("pruning method planner")

_KINDS = {"heads": ("heads",), "neurons": ("neurons",), "both": ("heads", "neurons"), "layers": ("layers",)}


def unstructured_planner(select: MaskSelector) -> Planner:
    """A planner that scores every weight with the spec's criterion and keeps what ``select`` keeps."""

    def plan(
        adapter: ArchAdapter, spec: PruneSpec, calib: Sequence[Batch] | None = None, prior: PrunePlan | None = None
    ) -> PrunePlan:
        scores = get_criterion(spec.criterion).weight_scores(adapter, calib, spec.seed)
        if prior is not None:
            # Already-pruned weights score -inf: they are the first to go again, so a mask never shrinks.
            scores = {n: torch.where(prior.masks[n].to(s.device), s, float("-inf")) for n, s in scores.items()}
        masks = select(scores, spec)
        if prior is not None:
            masks = {n: m.logical_and_(prior.masks[n].to(m.device)) for n, m in masks.items()}
        masks = {n: m.cpu() for n, m in masks.items()}
        return PrunePlan(spec=spec, config=adapter.config_dict(), masks=masks, schedule=(spec.sparsity,))

    return plan


def plan_structured(
    adapter: ArchAdapter, spec: PruneSpec, calib: Sequence[Batch] | None = None, prior: PrunePlan | None = None
) -> PrunePlan:
    """Keep the best-scoring heads / neurons / layers (``spec.granularity``) to the target sparsity."""
    heads: dict[int, tuple[int, ...]] = {}
    neurons: dict[int, tuple[int, ...]] = {}
    layers: tuple[int, ...] | None = None
    kinds = _KINDS[spec.granularity]
    # Kinds are scored together: a criterion may share its passes over data (Taylor's backward passes).
    all_scores = get_criterion(spec.criterion).group_scores_many(adapter, kinds, calib, spec.seed)
    for kind in kinds:
        scores = all_scores[kind]
        if kind == "layers":
            L = adapter.n_layers
            if prune_count(L, spec.sparsity) >= L:
                raise ValueError(
                    f"sparsity {spec.sparsity:g} would remove all {L} layers; an encoder keeps at least one"
                )
            before = None if prior is None else [prior.layers if prior.layers is not None else range(L)]
            layers = select_groups(scores, spec.sparsity, "global", what="layer", prior=before)[0]
            continue
        old = None if prior is None else getattr(prior, kind)
        before = None if old is None else [old.get(i, range(len(s))) for i, s in enumerate(scores)]
        kept = select_groups(
            scores, spec.sparsity, spec.scope, what=kind[:-1], allow_empty=spec.allow_empty_layers,
            round_to=spec.round_to, prior=before,
        )
        (heads if kind == "heads" else neurons).update(enumerate(kept))
    return PrunePlan(
        spec=spec, config=adapter.config_dict(), heads=heads, neurons=neurons, layers=layers,
        schedule=(spec.sparsity,),
    )


def plan_iterative(
    adapter: ArchAdapter, spec: PruneSpec, calib: Sequence[Batch] | None = None, prior: PrunePlan | None = None
) -> PrunePlan:
    """The final plan of a gradual run, computed on a private copy (no ``on_step``: nothing is fine-tuned)."""
    if prior is not None:
        raise ValueError("a gradual method does not continue another plan")
    return run_iterative_(adapter_for(copy.deepcopy(adapter.model)), spec, calib, on_step=None)


def _magnitude_masks(scores: dict[str, torch.Tensor], spec: PruneSpec) -> dict[str, torch.Tensor]:
    return (layer_masks if spec.scope == "layer" else global_masks)(scores, spec.sparsity)


PLANNERS.add("magnitude", unstructured_planner(_magnitude_masks))
PLANNERS.add("structured", plan_structured)
PLANNERS.add("iterative", plan_iterative)
PLANNERS.add("wanda", unstructured_planner(lambda scores, spec: row_masks(scores, spec.sparsity)))
PLANNERS.add("nm", unstructured_planner(lambda scores, spec: nm_masks(scores, spec.n, spec.m)))


def compute_plan(
    model: nn.Module | ArchAdapter, spec: PruneSpec, calib: Sequence[Batch] | None = None,
    prior: PrunePlan | None = None,
) -> PrunePlan:
    """Plan one one-shot step of ``spec`` (not a gradual method) without modifying ``model``."""
    if spec.gradual:
        raise ValueError(f"compute_plan plans one-shot methods; use run_iterative_ for {spec.method!r}")
    return PLANNERS.get(spec.method)(as_adapter(model), spec, calib, prior)


def run_iterative_(
    model: nn.Module | ArchAdapter, spec: PruneSpec, calib: Sequence[Batch] | None = None,
    on_step: OnStep | None = None,
) -> PrunePlan:
    """Gradual pruning in place: at each step score, select (masks only grow), zero, then ``on_step``.

    The model stays in its original shape during the loop (pruned weights are exact zeros), so fine-tuning
    in ``on_step`` sees the masked model; the returned plan is the final step's, with the whole schedule,
    and the caller materializes it (a structured plan is then shrunk).
    """
    if not spec.gradual:
        raise ValueError(f"run_iterative_ needs a gradual method (iterative), got {spec.method!r}")
    adapter = as_adapter(model)
    config = adapter.config_dict()
    values = schedule_values(spec.schedule, spec.steps, spec.sparsity)
    current: PrunePlan | None = None
    for step, target in enumerate(values, start=1):
        current = compute_plan(adapter, spec.step_spec(target), calib, prior=current)
        apply_plan_(adapter, current, "zeros")
        log.debug("iterative step %d/%d: sparsity %.4f", step, spec.steps, target)
        if on_step is not None:
            on_step(step, target, adapter.model)
            # Fine-tuning must not revive pruned weights; re-zeroing makes that a guarantee, not a hope.
            apply_plan_(adapter, current, "zeros")
    assert current is not None  # steps >= 1 is validated by PruneSpec
    return PrunePlan(
        spec=spec, config=config, masks=current.masks, heads=current.heads, neurons=current.neurons,
        layers=current.layers, schedule=values,
    )
