"""Comparative analysis of one run: speedups against dense, realized vs FLOP-ideal, memory and accuracy deltas,
crossover batch sizes and the accuracy-vs-latency Pareto front.

Everything here is a pure function of the store's plain rows (see :meth:`prunebench.results.ResultStore.snapshot`)
so that the report can be rebuilt from the store alone and the functions can be tested on hand-made rows.

A variant is called *faster* than dense at a batch size only when the whole confidence interval of the paired
speedup lies above the noise floor (``ci_low > 1 + margin``), *slower* only when it lies below it
(``ci_high < 1 - margin``), and *same* otherwise: a point estimate of 1.03 with a CI of [0.97, 1.09] is not a
speedup, and neither is [1.01, 1.03] when dense against its identical twin read [0.98, 1.04] at that shape.
"""

from prunebench.analysis.core import (
    BASELINE,
    VERDICTS,
    analyze,
    analyze_cells,
    analyze_variants,
    beyond_ideal,
    busy_cells,
    find_crossovers,
    main_seq_len,
    mostly_busy,
    noise_margin,
    pareto_at,
    pareto_front,
    ratio,
    speedup_verdict,
)
from prunebench.analysis.records import Analysis, CellAnalysis, Crossover, ParetoPoint, VariantAnalysis

__all__ = [
    "BASELINE",
    "VERDICTS",
    "Analysis",
    "CellAnalysis",
    "Crossover",
    "ParetoPoint",
    "VariantAnalysis",
    "analyze",
    "analyze_cells",
    "analyze_variants",
    "beyond_ideal",
    "busy_cells",
    "find_crossovers",
    "main_seq_len",
    "mostly_busy",
    "noise_margin",
    "pareto_at",
    "pareto_front",
    "ratio",
    "speedup_verdict",
]
