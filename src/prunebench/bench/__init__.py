"""Measurement harness: paired timing, sweeps over batch sizes, memory, FLOPs and the environment.

Submodules: :mod:`~prunebench.bench.timing` (measure, compare), :mod:`~prunebench.bench.flops`
(forward_macs), :mod:`~prunebench.bench.records` (result dataclasses), :mod:`~prunebench.bench.stats`.
"""

from prunebench.bench.flops import forward_macs, macs_breakdown
from prunebench.bench.records import SCHEMA_VERSION, CellResult, LatencyStats, MemoryReport, PairedResult
from prunebench.bench.timing import compare, measure

__all__ = [
    "SCHEMA_VERSION",
    "CellResult",
    "LatencyStats",
    "MemoryReport",
    "PairedResult",
    "compare",
    "forward_macs",
    "macs_breakdown",
    "measure",
]
