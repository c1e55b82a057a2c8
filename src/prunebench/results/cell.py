"""The one benchmark cell record: what the harness produces, the store writes and the analysis reads.

A cell is one variant on one execution backend at one input shape, timed paired against the baseline. Its
fields and their units are named here once (``*_ms`` milliseconds, ``*_bytes`` bytes, ``*_s`` per second,
MACs as counts) and nowhere else: the store's ``cells`` table is generated from :data:`CELL_FIELDS`, the
bench harness builds :class:`CellRecord` directly and the analysis reads rows back with
:meth:`CellRecord.from_row`. The key is ``(variant, backend, batch_size, seq_len, node_class)``; ``backend``
defaults to ``"eager"`` (plain PyTorch), so execution backends add cells without a schema change, and
``node_class`` to ``"local"`` (timed in-process): a run on a Ray cluster times every cell on every hardware
class of its nodes, and each class's cells sit side by side.

FLOP-ideal has one meaning (:func:`flop_ideal`): the baseline's dense MACs over the candidate's *effective*
MACs (only non-zero weights counted), i.e. what a perfect sparse kernel would gain. An unstructured 50% model
therefore reads ~1.9x even though dense kernels give it no speedup; that gap is the point of the report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Backend of a cell when none is named: eager PyTorch.
DEFAULT_BACKEND = "eager"

#: A cell that was deliberately not timed: its backend cannot express the variant, or is not installed here.
SKIPPED = "skipped"

#: A cell that could not gather its minimum of quiet timing blocks within its maximum time: the machine was
#: busy (:mod:`prunebench.bench.load`). It keeps what it measured, but is never shown as a ratio with a verdict.
UNMEASURED = "unmeasured"

#: Statuses of a cell: measured, out of memory, another error (``error`` then says what), skipped (``error``
#: then holds the reason) or unmeasured (``error`` says how busy the machine was). Neither a skip nor an
#: unmeasured cell is a failure of the variant: each is shown as what it is and fails no run (``--strict``
#: fails a run whose cells are mostly unmeasured or contended).
CELL_STATUSES = ("ok", "oom", "error", SKIPPED, UNMEASURED)

#: Field metadata of a record field kept in the store's ``extra`` column rather than a column of its own:
#: fields added within a schema version (no layout change; older stores simply lack them).
IN_EXTRA = {"column": False}

#: Node class of a cell timed in-process (the local executor); a Ray run names each class of its nodes.
LOCAL_NODE_CLASS = "local"

#: The fields that identify a cell.
CELL_KEY = ("variant", "backend", "batch_size", "seq_len", "node_class")


def flop_ideal(baseline_macs: float | None, effective_macs: float | None) -> float | None:
    """The FLOP-ideal speedup: baseline dense MACs / candidate effective (non-zero) MACs; None if unknown."""
    if baseline_macs is None or effective_macs is None or baseline_macs <= 0:
        return None
    if effective_macs <= 0:
        return math.inf
    return float(baseline_macs) / float(effective_macs)


@dataclass(frozen=True)
class CellRecord:
    """One benchmark cell.

    Attributes:
        variant, backend, batch_size, seq_len, node_class: the key (see the module docstring).
        baseline: the variant it was timed against (the baseline's own cell is timed against an identical
            twin: its speedup and CI are the measurement's noise floor).
        status, error: ``ok``, ``oom``, ``error`` or ``skipped``; ``error`` is a one-line message for the
            others (for ``skipped``, the reason of the skip).
        device, threads, include_head, pad_fraction: the conditions of the measurement.
        latency_ms, latency_p90_ms, latency_cv: this variant's per-call latency (median, p90) and its
            coefficient of variation, over the timed pairs.
        baseline_latency_ms: the baseline's median latency over the same pairs.
        speedup, speedup_ci_low, speedup_ci_high: median of per-pair baseline/candidate time ratios and its
            confidence interval (block bootstrap over the blocks the cell was timed in).
        n_pairs, n_blocks: how many pairs were timed, in how many blocks spread across the sweep.
        stop_reason: why timing of the cell stopped (``precision``, ``min_reached``, ``max_time``, ``max_pairs``).
        macs, effective_macs: MACs of one timed call of this variant (dense count / non-zero weights only).
        baseline_macs: dense MACs of the baseline's timed call at the same shape.
        flop_ideal_speedup: :func:`flop_ideal` of the two.
        throughput_samples_s, throughput_tokens_s: from the median latency (tokens include padding).
        peak_memory_bytes: peak memory of one forward (None when not measured).
        load_1m_before, load_1m_after: the machine's 1-minute load average when the cell started and ended.
        cpu_per_wall: process CPU seconds / wall seconds while the cell was timed.
        steal_fraction: share of CPU time the hypervisor stole while the cell was timed (stores written before
            per-block contention; it is now part of ``other_cores``).
        contended: whether the cell's kept blocks were measured while something else competed for the cores
            (:mod:`prunebench.bench.load`).
        other_cores: cores other processes held on average during the blocks kept (steal included);
            other_cores_max: the most during any block timed, kept or discarded.
        busy_blocks: blocks during which other processes held more than the busy level; discarded_blocks: of
            those, the ones dropped and timed again (all of them unless ``busy_allowed``: ``--allow-busy``).
        contention_source: ``proc-stat`` (per block) or ``load-average`` (the portable fallback).
        timing: the full paired result (raw ratios per block, both sides' statistics), as plain data.
        extra: anything else a producer wants kept.
    """

    variant: str
    batch_size: int
    seq_len: int
    backend: str = DEFAULT_BACKEND
    node_class: str = LOCAL_NODE_CLASS
    baseline: str = "dense"
    status: str = "ok"
    error: str | None = None
    device: str = "cpu"
    threads: int | None = None
    include_head: bool = False
    pad_fraction: float = 0.0
    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_cv: float | None = None
    baseline_latency_ms: float | None = None
    speedup: float | None = None
    speedup_ci_low: float | None = None
    speedup_ci_high: float | None = None
    n_pairs: int = 0
    n_blocks: int = 0
    stop_reason: str | None = None
    macs: int | None = None
    effective_macs: int | None = None
    baseline_macs: int | None = None
    flop_ideal_speedup: float | None = None
    throughput_samples_s: float | None = None
    throughput_tokens_s: float | None = None
    peak_memory_bytes: int | None = None
    load_1m_before: float | None = None
    load_1m_after: float | None = None
    cpu_per_wall: float | None = None
    steal_fraction: float | None = None
    contended: bool | None = None
    other_cores: float | None = field(default=None, metadata=IN_EXTRA)
    other_cores_max: float | None = field(default=None, metadata=IN_EXTRA)
    busy_blocks: int = field(default=0, metadata=IN_EXTRA)
    discarded_blocks: int = field(default=0, metadata=IN_EXTRA)
    busy_allowed: bool = field(default=False, metadata=IN_EXTRA)
    contention_source: str | None = field(default=None, metadata=IN_EXTRA)
    timing: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the cell was measured without error."""
        return self.status == "ok"

    @property
    def skipped(self) -> bool:
        """Whether the cell was deliberately not timed (a recorded skip, not a failure)."""
        return self.status == SKIPPED

    @property
    def unmeasured(self) -> bool:
        """Whether the machine was too busy to measure the cell (a recorded state, not a failure)."""
        return self.status == UNMEASURED

    @property
    def failed(self) -> bool:
        """Whether the cell failed (oom or error; neither a skip nor a cell the busy machine left unmeasured)."""
        return self.status not in ("ok", SKIPPED, UNMEASURED)

    @property
    def key(self) -> tuple[str, str, int, int, str]:
        """``(variant, backend, batch_size, seq_len, node_class)``."""
        return (self.variant, self.backend, self.batch_size, self.seq_len, self.node_class)

    def to_row(self) -> dict[str, Any]:
        """The record as the store's plain dict (``extra`` merged in, so unknown fields survive a round trip)."""
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **_finite(row)}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CellRecord:
        """A record from a store row (or any dict with the key fields); unknown fields go to ``extra``.

        Raises:
            ValueError: a key field is missing.
        """
        missing = [k for k in ("variant", "batch_size", "seq_len") if row.get(k) is None]
        if missing:
            raise ValueError(f"a cell needs {', '.join(missing)} (key: {', '.join(CELL_KEY)})")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        fields = {k: v for k, v in row.items() if k in known and v is not None}
        extra = {**(row.get("extra") or {}), **{k: v for k, v in row.items() if k not in known and k != "extra"}}
        fields["batch_size"], fields["seq_len"] = int(row["batch_size"]), int(row["seq_len"])
        return cls(**fields, extra=extra)


def _finite(value: Any) -> Any:
    """Non-finite floats become None: the store and strict JSON have no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: Store column kind of every field (see :mod:`prunebench.results.schema`), in column order.
_KINDS = {"str": "text", "int": "int", "float": "real", "bool": "bool", "dict": "json"}


def _kind(annotation: str) -> str:
    base = annotation.split("|")[0].strip().split("[")[0]
    return _KINDS[base]


#: The store's columns: every field but ``extra`` and those kept in it (:data:`IN_EXTRA`).
CELL_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (f.name, _kind(str(f.type))) for f in dataclasses.fields(CellRecord)
    if f.name != "extra" and f.metadata.get("column", True)
)


def normalize_cell_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored cell row as this version reads it (in place; returned for convenience).

    Stores written before ``skipped`` was a status kept a skip as ``error`` with a message ``"skipped: why"``
    and ``backend_status`` ``skipped`` in ``extra``; such a row reads as ``skipped`` with ``why`` as its reason.
    """
    if row.get("status") == "error" and row.get("backend_status") == SKIPPED:
        row["status"] = SKIPPED
        row["error"] = row.get("backend_message") or str(row.get("error") or "").removeprefix(f"{SKIPPED}: ")
    return row
