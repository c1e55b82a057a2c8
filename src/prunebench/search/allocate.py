"""The search: per-layer head and neuron counts that keep the most importance under a predicted latency.

This is a multiple-choice knapsack: each layer picks one (heads, neurons) pair, worth the importance of its
top heads plus its top neurons and costing the table's predicted in-model latency; the sum of costs must
fit the budget ``latency(full) / target - fixed``. Dynamic programming over a discretized budget solves it
exactly up to the discretization (costs are rounded *up*, so the chosen widths never exceed the budget).
Each layer keeps at least one head and one neuron, which bounds the reachable speedup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prunebench.search._arch import Widths
from prunebench.search.importance import Importance
from prunebench.search.latency import LatencyTable


@dataclass(frozen=True)
class Allocation:
    """Chosen widths and which groups they keep.

    Attributes:
        widths: (heads, neurons) per layer.
        heads, neurons: kept indices per layer (the most important ones, in index order).
        predicted_speedup: the latency model's speedup of ``widths``.
        aimed_at: the speedup the budget was computed for.
        retained: fraction of the total (heads + neurons) importance kept.
    """

    widths: Widths
    heads: dict[int, tuple[int, ...]]
    neurons: dict[int, tuple[int, ...]]
    predicted_speedup: float
    aimed_at: float
    retained: float


def minimal_widths(full: Widths) -> Widths:
    """One head and one neuron in every layer: the fastest model the search may return."""
    return tuple((1, 1) for _ in full)


def reachable_speedup(table: LatencyTable) -> float:
    """Largest predicted speedup: every layer at one head and one neuron."""
    return table.speedup(minimal_widths(table.full))


#: The largest speedup target accepted before the latency table says what is reachable (an encoder cut to one
#: head and one neuron per layer is far below it; 1e9 was accepted and the search ran before refusing it).
MAX_TARGET = 100.0


def check_targets(targets: Sequence[float], table: LatencyTable | None = None, *,
                  top: float | None = None) -> tuple[float, ...]:
    """Targets as floats; a one-line ValueError for one <= 1 or (with a table) beyond the reachable speedup
    (``top``: the reachable speedup on the search's backend, where it is not the table's own; without either,
    :data:`MAX_TARGET`)."""
    if not targets:
        raise ValueError("give at least one speedup target, e.g. --targets 1.5,2")
    out = []
    if top is None:
        top = reachable_speedup(table) if table is not None else MAX_TARGET
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 1.0 or t > top:
            if table is None and top == MAX_TARGET:
                raise ValueError(f"speedup target {t!r} must be a number above 1 and at most {MAX_TARGET:g} "
                                 "(a speedup over the dense model)")
            raise ValueError(f"speedup target {t!r} is outside the reachable range (1, {top:.2f}] at this shape "
                             "(every layer down to one head and one neuron)")
        out.append(float(t))
    return tuple(out)


def _retained_total(importance: Importance) -> float:
    return float(sum(s.double().sum() for s in importance.heads) + sum(s.double().sum() for s in importance.neurons))


def allocation_of(importance: Importance, table: LatencyTable, widths: Widths, aimed_at: float) -> Allocation:
    """The :class:`Allocation` keeping the top ``widths`` groups of every layer."""
    heads = {i: importance.kept("heads", i, h) for i, (h, _) in enumerate(widths)}
    neurons = {i: importance.kept("neurons", i, f) for i, (_, f) in enumerate(widths)}
    kept = sum(float(importance.retained("heads", i)[h]) + float(importance.retained("neurons", i)[f])
               for i, (h, f) in enumerate(widths))
    total = _retained_total(importance)
    return Allocation(tuple(widths), heads, neurons, table.speedup(widths), aimed_at,
                      kept / total if total > 0 else 1.0)


def search_widths(
    importance: Importance, table: LatencyTable, target: float, *, bins: int = 4000
) -> Allocation:
    """Most retained importance whose predicted speedup is at least ``target``.

    Each layer chooses among its table's measured (heads, neurons) points, so no cost is interpolated.

    Raises:
        ValueError: ``target`` outside the reachable range (one line, stating the range).
    """
    check_targets([target], table)
    full = table.full
    budget = table.latency(full) / target - table.fixed  # units left for the layers
    delta = budget / bins
    dp = np.full(bins + 1, -np.inf)
    dp[0] = 0.0
    back: list[tuple[np.ndarray, list[tuple[int, int]], np.ndarray]] = []
    for i in range(len(full)):
        choices = table.table_of(i).choices()
        rh, rf = importance.retained("heads", i).numpy(), importance.retained("neurons", i).numpy()
        value = np.array([rh[h] + rf[f] for h, f in choices])  # [C]
        cost = np.ceil(np.array([table.layer_cost(i, h, f) for h, f in choices]) / delta - 1e-9)  # [C] bins
        cost = np.maximum(cost, 0).astype(int)
        new = np.full(bins + 1, -np.inf)
        arg = np.full(bins + 1, -1)
        for c, (k, v) in enumerate(zip(cost, value, strict=True)):
            if k > bins:
                continue
            cand = dp[: bins + 1 - k] + v  # [bins + 1 - k]: spend k more bins on this choice
            better = cand > new[k:]
            new[k:][better] = cand[better]
            arg[k:][better] = c
        back.append((arg, choices, cost))
        dp = new
    if not np.isfinite(dp).any():
        raise ValueError(f"speedup target {target:g} is out of the reachable range "
                         f"(1, {reachable_speedup(table):.2f}] at this shape")
    b = int(np.argmax(dp))
    widths: list[tuple[int, int]] = []
    for arg, choices, cost in reversed(back):
        c = int(arg[b])
        widths.append(choices[c])
        b -= int(cost[c])
    return allocation_of(importance, table, tuple(reversed(widths)), target)


def uniform_widths(full: Widths, fraction: float) -> Widths:
    """The same fraction of heads and neurons removed in every layer (at least one of each kept)."""
    return tuple((max(1, round((1 - fraction) * H)), max(1, round((1 - fraction) * F))) for H, F in full)


def uniform_fraction_for(table: LatencyTable, speedup: float, iters: int = 40) -> float:
    """Smallest uniform fraction whose predicted speedup reaches ``speedup`` (bisection; clamped to [0, 1))."""
    lo, hi = 0.0, 1.0 - 1e-9
    if table.speedup(uniform_widths(table.full, hi)) < speedup:
        return hi
    for _ in range(iters):
        mid = (lo + hi) / 2
        if table.speedup(uniform_widths(table.full, mid)) >= speedup:
            hi = mid
        else:
            lo = mid
    return hi
