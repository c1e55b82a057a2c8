"""Materialization: turn a :class:`PrunePlan` into weights.

``zeros``  the chosen weights (or the chosen groups' weights) are set to exactly 0 in place; the model keeps
           its shape. This is the masked reference every other materialization is checked against.
``shrink`` structured plans only: heads, neurons and layers are physically removed through the adapter,
           so the model is an ordinary, smaller model of its own class.
No hooks, parametrizations or ``weight_orig`` tensors are ever installed: masks are applied directly.
"""

from __future__ import annotations

import torch
from torch import nn

from prunebench.models.adapters import as_adapter
from prunebench.models.arch import ArchAdapter
from prunebench.pruning.plan import PrunePlan

MATERIALIZATIONS = ("default", "zeros", "shrink")


def resolve_materialization(plan: PrunePlan, materialize: str) -> str:
    """``zeros`` or ``shrink`` for this plan (``default``: shrink structured plans, zero the others)."""
    if materialize not in MATERIALIZATIONS:
        raise ValueError(f"unknown materialization {materialize!r}; choose from: {', '.join(MATERIALIZATIONS)}")
    if materialize == "default":
        return "shrink" if plan.structured else "zeros"
    if materialize == "shrink" and not plan.structured:
        raise ValueError("only a structured plan (heads / neurons / layers) can be shrunk; use materialize='zeros'")
    return materialize


@torch.no_grad()
def apply_plan_(model: nn.Module | ArchAdapter, plan: PrunePlan, materialize: str = "default") -> str:
    """Apply ``plan`` to ``model`` in place.

    Args:
        model: a model (or its adapter) with the architecture the plan was computed for (checked).
        plan: from :func:`prunebench.pruning.plan` or ``PrunePlan.from_dict``.
        materialize: ``default`` (shrink structured plans, zero unstructured ones), ``zeros`` or ``shrink``.

    Returns:
        The materialization used: ``"zeros"`` or ``"shrunk"``.

    Raises:
        ValueError: unknown materialization, shrinking an unstructured plan, or an architecture mismatch.
    """
    how = resolve_materialization(plan, materialize)
    adapter = as_adapter(model)
    plan.check_model(adapter)
    linears = adapter.prunable_linears()
    for name, mask in plan.masks.items():
        if name not in linears:
            raise ValueError(f"plan masks module {name!r}, which this model does not have")
        weight = linears[name].weight
        if tuple(mask.shape) != tuple(weight.shape):
            raise ValueError(f"plan mask for {name!r} has shape {tuple(mask.shape)}, weight is {tuple(weight.shape)}")
        weight.masked_fill_(~mask.to(weight.device), 0.0)  # exact zeros; kept weights untouched (bit-identical)
    if how == "zeros":
        for kind, kept_by_layer in (("heads", plan.heads), ("neurons", plan.neurons)):
            for layer, kept in kept_by_layer.items():
                removed = sorted(set(range(adapter.group_count(kind, layer))) - set(kept))
                adapter.zero_groups_(kind, layer, removed)
        if plan.layers is not None:
            for layer in sorted(set(range(adapter.n_layers)) - set(plan.layers)):
                adapter.zero_layer_(layer)
        return "zeros"
    # Shrink heads and neurons first, while layer indices still match the plan's original numbering.
    for kind, kept_by_layer in (("heads", plan.heads), ("neurons", plan.neurons)):
        for layer, kept in kept_by_layer.items():
            if len(kept) != adapter.group_count(kind, layer):
                adapter.keep_groups_(kind, layer, kept)
    if plan.layers is not None and len(plan.layers) != adapter.n_layers:
        adapter.keep_layers_(plan.layers)
    return "shrunk"
