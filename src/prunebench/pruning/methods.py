"""One-shot planners (magnitude, structured, wanda, nm) and the iterative loop built on them.

Each planner is criterion -> selection: it scores with :mod:`criteria`, selects with :mod:`select`, and
returns a :class:`PrunePlan`; none modifies the model. ``prior`` (used by the iterative loop) is the
previous step's plan: whatever it removed is removed again, so masks only grow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from prunebench.models.adapter import EncoderAdapter
from prunebench.models.batch import Batch
from prunebench.models.encoder import TransformerEncoder
from prunebench.pruning.apply import apply_plan_
from prunebench.pruning.criteria import group_scores, taylor_group_scores, weight_scores
from prunebench.pruning.plan import PrunePlan
from prunebench.pruning.schedule import schedule_values
from prunebench.pruning.select import global_masks, layer_masks, nm_masks, prune_count, row_masks, select_groups
from prunebench.pruning.spec import PruneSpec

log = logging.getLogger(__name__)

#: ``on_step(step, sparsity, model)``: called after each pruning step (recovery fine-tuning plugs in here).
OnStep = Callable[[int, float, TransformerEncoder], None]

_KINDS = {"heads": ("heads",), "neurons": ("neurons",), "both": ("heads", "neurons"), "layers": ("layers",)}


def compute_plan(
    model: TransformerEncoder, spec: PruneSpec, calib: Sequence[Batch] | None = None, prior: PrunePlan | None = None
) -> PrunePlan:
    """Plan one one-shot step of ``spec`` (not ``iterative``) without modifying ``model``."""
    if spec.method == "iterative":
        raise ValueError("compute_plan plans one-shot methods; use run_iterative_ for 'iterative'")
    if spec.method == "structured":
        return _plan_structured(model, spec, calib, prior)
    adapter = EncoderAdapter(model)
    scores = weight_scores(adapter, spec.criterion, calib, spec.seed)
    if prior is not None:
        # Already-pruned weights score -inf: they are the first to go again, so a mask never shrinks.
        scores = {n: torch.where(prior.masks[n].to(s.device), s, float("-inf")) for n, s in scores.items()}
    if spec.method == "magnitude":
        masks = (layer_masks if spec.scope == "layer" else global_masks)(scores, spec.sparsity)
    elif spec.method == "wanda":
        masks = row_masks(scores, spec.sparsity)
    elif spec.method == "nm":
        masks = nm_masks(scores, spec.n, spec.m)
    else:
        raise ValueError(f"no planner for method {spec.method!r}")
    if prior is not None:
        masks = {n: m.logical_and_(prior.masks[n].to(m.device)) for n, m in masks.items()}
    masks = {n: m.cpu() for n, m in masks.items()}
    return PrunePlan(spec=spec, config=model.config.to_dict(), masks=masks, schedule=(spec.sparsity,))


def _plan_structured(
    model: TransformerEncoder, spec: PruneSpec, calib: Sequence[Batch] | None, prior: PrunePlan | None
) -> PrunePlan:
    adapter = EncoderAdapter(model)
    heads: dict[int, tuple[int, ...]] = {}
    neurons: dict[int, tuple[int, ...]] = {}
    layers: tuple[int, ...] | None = None
    kinds = _KINDS[spec.granularity]
    # Taylor scores of heads and neurons come from the same backward passes: compute them together.
    taylor = taylor_group_scores(adapter, kinds, calib) if spec.criterion == "taylor" else {}
    for kind in kinds:
        scores = taylor[kind] if taylor else group_scores(adapter, kind, spec.criterion, calib, spec.seed)
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
        spec=spec, config=model.config.to_dict(), heads=heads, neurons=neurons, layers=layers,
        schedule=(spec.sparsity,),
    )


def run_iterative_(
    model: TransformerEncoder, spec: PruneSpec, calib: Sequence[Batch] | None = None, on_step: OnStep | None = None
) -> PrunePlan:
    """Gradual pruning in place: at each step score, select (masks only grow), zero, then ``on_step``.

    The model stays in its original shape during the loop (pruned weights are exact zeros), so fine-tuning
    in ``on_step`` sees the masked model; the returned plan is the final step's, with the whole schedule,
    and the caller materializes it (a structured plan is then shrunk).
    """
    if spec.method != "iterative":
        raise ValueError(f"run_iterative_ needs method 'iterative', got {spec.method!r}")
    config = model.config.to_dict()
    values = schedule_values(spec.schedule, spec.steps, spec.sparsity)
    current: PrunePlan | None = None
    for step, target in enumerate(values, start=1):
        current = compute_plan(model, spec.step_spec(target), calib, prior=current)
        apply_plan_(model, current, "zeros")
        log.debug("iterative step %d/%d: sparsity %.4f", step, spec.steps, target)
        if on_step is not None:
            on_step(step, target, model)
            # Fine-tuning must not revive pruned weights; re-zeroing makes that a guarantee, not a hope.
            apply_plan_(model, current, "zeros")
    assert current is not None  # steps >= 1 is validated by PruneSpec
    return PrunePlan(
        spec=spec, config=config, masks=current.masks, heads=current.heads, neurons=current.neurons,
        layers=current.layers, schedule=values,
    )

