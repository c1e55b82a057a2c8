"""Measurement harness: paired timing, sweeps over batch sizes, memory, FLOPs and the environment.

Submodules: :mod:`~prunebench.bench.timing` (measure, time_paired), :mod:`~prunebench.bench.sweep` (sweep,
bench_pair), :mod:`~prunebench.bench.flops` (forward_macs), :mod:`~prunebench.bench.memory`,
:mod:`~prunebench.bench.env`, :mod:`~prunebench.bench.inputs` (make_inputs), :mod:`~prunebench.bench.settings`
(BenchSettings, presets) and :mod:`~prunebench.bench.records` (result dataclasses). A sweep produces
:class:`~prunebench.results.cell.CellRecord`, the one cell record that the store writes and analysis reads.
"""

from prunebench.bench.env import environment, fingerprint_hash
from prunebench.bench.flops import flop_ideal_speedup, forward_macs, macs_breakdown
from prunebench.bench.inputs import forward_call, make_inputs
from prunebench.bench.memory import disk_bytes, parameter_report, peak_forward_memory
from prunebench.bench.records import (
    SCHEMA_VERSION,
    BenchReport,
    LatencyStats,
    MemoryReport,
    PairedResult,
)
from prunebench.bench.settings import BENCH_PRESETS, BenchSettings, bench_settings
from prunebench.bench.sweep import bench_pair, bench_single, sweep
from prunebench.bench.timing import measure, time_paired
from prunebench.results.cell import CellRecord, flop_ideal

__all__ = [
    "BENCH_PRESETS",
    "SCHEMA_VERSION",
    "BenchReport",
    "BenchSettings",
    "CellRecord",
    "LatencyStats",
    "MemoryReport",
    "PairedResult",
    "bench_pair",
    "bench_settings",
    "bench_single",
    "disk_bytes",
    "environment",
    "fingerprint_hash",
    "flop_ideal",
    "flop_ideal_speedup",
    "forward_call",
    "forward_macs",
    "macs_breakdown",
    "make_inputs",
    "measure",
    "parameter_report",
    "peak_forward_memory",
    "sweep",
    "time_paired",
]
