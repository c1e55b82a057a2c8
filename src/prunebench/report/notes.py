"""Sentences and lists the summary adds about noise: accuracy differences with their CI, contended cells."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prunebench.analysis import Analysis
from prunebench.analysis.bootstrap import NO_CHANGE
from prunebench.report import fmt


def contention_warnings(analysis: Analysis) -> list[str]:
    """One line per cell measured while the machine was busy (its figures may be noisier than their CI says)."""
    out = []
    for c in analysis.cells:
        if c.contended:
            loads = [x for x in (c.load_1m_before, c.load_1m_after) if x is not None]
            load = f"1-min load {max(loads):.1f}" if loads else "load unknown"
            steal = f", {100 * c.steal_fraction:.1f}% CPU stolen" if c.steal_fraction else ""
            out.append(f"{c.variant}: cell B={c.batch_size} seq={c.seq_len} measured under contention ({load}{steal})")
    return out


def accuracy_notes(pruned: Sequence[Any]) -> list[str]:
    """The accuracy sentence: the most accurate variant only when its difference from dense is measurable."""
    scored = [v for v in pruned if v.accuracy_delta is not None]
    if not scored:
        return []
    if all(v.accuracy_verdict == "n/a" for v in scored):  # no per-prediction correctness stored: plain figures
        best = max(scored, key=lambda v: v.accuracy_delta or 0.0)
        return [f"The most accurate pruned variant was {best.name} ({fmt.delta_pp(best.accuracy_delta)} vs dense)."]
    same = [v.name for v in scored if v.accuracy_verdict == NO_CHANGE]
    less = [v.name for v in scored if v.accuracy_verdict == "less accurate"]
    more = [v.name for v in scored if v.accuracy_verdict == "more accurate"]
    out = []
    if more:
        out.append(f"Measurably more accurate than dense (paired 95% CI above 0): {', '.join(more)}.")
    if less:
        out.append(f"Measurably less accurate than dense: {', '.join(less)}.")
    if same:
        out.append(f"No measurable change in accuracy (the CI of the difference holds 0): {', '.join(same)}.")
    return out
