"""Choosing among candidate allocations by what they do to held-out calibration loss.

The knapsack of :mod:`prunebench.search.allocate` maximizes the *sum* of importance kept, which trusts that
the Fisher (or Taylor) scores of different layers are on one scale. They often are not: on all-MiniLM-L6-v2
with a frozen-probe loss, the raw Fisher allocation at 2x measured 3.7 pp below uniform pruning at the same
speed, because a gradient-based score of one layer barely sees what removing it does to the layers after it.
So the search proposes a few allocations that trust the cross-layer scale less and less,

    importance   the raw scores                                  (alpha = 0)
    balanced     each layer's scores * (mean layer total / this layer's total) ** 0.5
    normalized   the same with exponent 1 (every layer's groups worth the same in total)
    uniform      the same fraction of heads and of neurons in every layer (no cross-layer trust at all)

all at the same predicted latency, and keeps the one whose shrunk (and, with rescaling, refitted) model has
the lowest task loss on the held-out calibration batches. The test split is never looked at. Within a
layer every candidate keeps the same top-ranked groups; only the per-layer counts differ.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from prunebench.models.batch import Batch, LossFn
from prunebench.search.allocate import (
    Allocation,
    allocation_of,
    search_widths,
    uniform_fraction_for,
    uniform_widths,
)
from prunebench.search.importance import SEARCH_KINDS, Importance
from prunebench.search.latency import LatencyTable
from prunebench.search.rescale import mean_loss, rescale_

log = logging.getLogger(__name__)

#: Candidate name -> exponent of the per-layer normalization (None: uniform fractions, no knapsack).
CANDIDATES: dict[str, float | None] = {"importance": 0.0, "balanced": 0.5, "normalized": 1.0, "uniform": None}

#: Builds the shrunk model of an allocation: ``(model, plan, fidelity)`` (``verify.build`` bound to the dense
#: model and shape).
Builder = Callable[[Allocation], tuple[nn.Module, Any, dict[str, Any]]]


def layer_normalized(importance: Importance, alpha: float) -> Importance:
    """``importance`` with each layer's scores (per kind) scaled by ``(mean layer total / its total) ** alpha``.

    Scaling a layer's scores by one factor keeps its ranking, so only how much each layer keeps can change.
    """
    if alpha == 0.0:
        return importance
    scaled: dict[str, tuple[torch.Tensor, ...]] = {}
    for kind in SEARCH_KINDS:
        layers = importance.of(kind)
        totals = [float(s.double().sum()) for s in layers]
        positive = [t for t in totals if t > 0]
        mean = sum(positive) / len(positive) if positive else 0.0
        scaled[kind] = tuple(s * (mean / t) ** alpha if t > 0 else s for s, t in zip(layers, totals, strict=True))
    return replace(importance, heads=scaled["heads"], neurons=scaled["neurons"])


def candidate_allocations(importance: Importance, table: LatencyTable, aim: float) -> dict[str, Allocation]:
    """One allocation per :data:`CANDIDATES` entry, each predicted to reach ``aim`` (duplicates dropped).

    Every allocation's ``retained`` is measured with the raw ``importance``, so they compare on one scale.
    """
    out: dict[str, Allocation] = {}
    for name, alpha in CANDIDATES.items():
        if alpha is None:
            widths = uniform_widths(table.full, uniform_fraction_for(table, aim))
        else:
            widths = search_widths(layer_normalized(importance, alpha), table, aim).widths
        if any(a.widths == widths for a in out.values()):
            continue
        out[name] = allocation_of(importance, table, widths, aim)
    return out


@dataclass(frozen=True)
class Choice:
    """The chosen candidate, what ``build`` gave for it (shrunk, not refitted) and every candidate's loss."""

    name: str
    allocation: Allocation
    built: tuple[nn.Module, Any, dict[str, Any]]
    record: list[dict[str, Any]]


def choose_allocation(
    importance: Importance, table: LatencyTable, aim: float, build: Builder, dense: nn.Module, *,
    fit: Sequence[Batch], held: Sequence[Batch], rescale: bool, loss_fn: LossFn | None,
) -> Choice:
    """The candidate allocation for ``aim`` with the lowest held-out loss (after rescaling, when on).

    Args:
        importance: raw group importance of ``dense``.
        table: the latency model (every candidate is predicted to reach ``aim`` on it).
        aim: the predicted speedup to reach.
        build: shrinks a copy of ``dense`` to an allocation (and checks it against the masked model).
        dense: the dense model (the refit's targets).
        fit, held: calibration batches to refit on and to score on.
        rescale: score each candidate after the same least-squares refit the final model gets.
        loss_fn: the task loss of a model without one (an HF base encoder); None: the adapter's.
    """
    best: tuple[float, str, Allocation, tuple[nn.Module, Any, dict[str, Any]]] | None = None
    record = []
    for name, alloc in candidate_allocations(importance, table, aim).items():
        built = build(alloc)
        model = built[0]
        if rescale:
            scored = copy.deepcopy(model)
            res = rescale_(scored, dense, fit, held, loss_fn=loss_fn)
            loss = min(res["loss_before"], res["loss_after"])  # rescale_ keeps the refit only when it helps
            del scored
        else:
            loss = mean_loss(model, held, loss_fn)
        record.append({"candidate": name, "widths": [list(w) for w in alloc.widths],
                       "predicted": alloc.predicted_speedup, "retained_importance": alloc.retained,
                       "held_out_loss": loss})
        if best is None or loss < best[0]:
            best = (loss, name, alloc, built)
    assert best is not None  # CANDIDATES is never empty
    log.info("search at %.3gx: chose %s (held-out loss %.4f) among %s", aim, best[1], best[0],
             ", ".join(f"{r['candidate']} {r['held_out_loss']:.4f}" for r in record))
    for r in record:
        r["chosen"] = r["candidate"] == best[1]
    return Choice(best[1], best[2], best[3], record)
