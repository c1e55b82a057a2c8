"""The state of one sweep and its cells: timing a cell block by block, stopping it, finishing its record.

:func:`prunebench.bench.sweep.sweep` schedules; this module does the work of one visit (see there for the
scheduling and why cells are revisited). What a side of a cell runs is a :class:`Subject`: an eager model
(its ``forward_call``), or a backend's runnable with its own call, memory measure, pre-block check and
record fields, so backend cells are timed by the same blocks as eager ones.

Every block is read by the sweep's :class:`~prunebench.bench.load.CpuMeter`. A block during which other
processes held more than the busy level (:func:`~prunebench.bench.load.is_busy`) is discarded, and the
sweep backs off (sleeps :data:`BACKOFF_S`, doubling with every busy block in a row, at most
:data:`MAX_BACKOFF_S`) before it times the next one; the sleep is charged to the cell's ``max_time``. A cell
that reaches ``max_time`` with fewer than ``min_blocks`` quiet blocks is stored ``unmeasured`` with what it
has. Quiet blocks cost two reads of ``/proc/stat`` each and no sleep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from prunebench.bench.blocks import PairedBlocks
from prunebench.bench.flops import forward_macs
from prunebench.bench.inputs import forward_call
from prunebench.bench.load import CpuMeter, LoadProbe
from prunebench.bench.memory import peak_forward_memory
from prunebench.bench.records import PairedResult
from prunebench.bench.settings import BenchSettings
from prunebench.bench.timing import Timer, timer_for
from prunebench.models.adapters import find_adapter
from prunebench.models.batch import Batch
from prunebench.results.cell import DEFAULT_BACKEND, UNMEASURED, CellRecord, flop_ideal

logger = logging.getLogger(__name__)

#: ``progress(done, total, cell)`` after each finished cell.
Progress = Callable[[int, int, CellRecord], None]
#: First back-off after a busy block, in seconds; it doubles with each busy block in a row, up to the maximum.
BACKOFF_S = 0.2
MAX_BACKOFF_S = 1.6


def _macs(model: nn.Module, batch_size: int, seq_len: int, include_head: bool) -> tuple[int | None, int | None]:
    if find_adapter(model) is None:
        return None, None
    dense = forward_macs(model, batch_size, seq_len, include_head=include_head)
    eff = forward_macs(model, batch_size, seq_len, include_head=include_head, effective=True)
    return dense, eff


def cell_failure(exc: BaseException) -> tuple[str, str]:
    """(status, one-line message) of a failed cell."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    oom = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text.lower()
    if oom and torch.cuda.is_available():
        torch.cuda.empty_cache()  # give the next cell a clean slate
    return ("oom" if oom else "error"), f"{type(exc).__name__}: {text}"


class CellRejected(Exception):
    """Raised by a :attr:`Subject.check`: the cell stops now and is recorded with ``fields`` and no timings.

    Args:
        fields: the failed record's fields (``status``, ``error``, ``extra``, ...).
    """

    def __init__(self, fields: dict[str, Any]) -> None:
        super().__init__(str(fields.get("error", "")))
        self.fields = fields


@dataclass(frozen=True)
class Subject:
    """What one side of a cell runs: an eager model, or a backend's runnable prepared from one.

    Attributes:
        variant: the variant recorded in the cell's key.
        model: the eager model: the cell's MACs are its, its device is checked, default inputs fit it.
        backend: the backend recorded in the cell's key.
        call_for: ``call_for(batch) -> fn``, the zero-argument call that is timed (None: the model's
            ``forward_call``).
        check: called before every block of each cell this subject is in; raises :class:`CellRejected` to
            stop the cell untimed (e.g. a runnable found in training mode).
        memory: ``memory(batch) -> bytes | None``, one call's peak memory (None: torch's accounting of the call).
        extra: merged into the ``extra`` of the cells this subject is the candidate of.
    """

    variant: str
    model: nn.Module
    backend: str = DEFAULT_BACKEND
    call_for: Callable[[Batch], Callable[[], Any]] | None = None
    check: Callable[[], None] | None = None
    memory: Callable[[Batch], int | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CellState:
    """One cell being timed: what it compares, its blocks so far, its load probe and its back-off time."""

    order: int
    batch_size: int
    seq_len: int
    baseline: Subject
    candidate: Subject
    batch: Batch
    blocks: PairedBlocks
    probe: LoadProbe = field(default_factory=LoadProbe)
    #: seconds slept backing off after this cell's busy blocks (charged to its ``max_time``).
    waited_s: float = 0.0

    @property
    def spent_s(self) -> float:
        """Seconds this cell has cost: its blocks (discarded ones too), warm-ups and back-offs."""
        return self.blocks.spent_s + self.waited_s


class SweepState:
    """The state of one sweep: settings, the baseline, and how finished cells are reported."""

    def __init__(self, settings: BenchSettings, baseline: Subject, total: int,
                 on_cell: Callable[[CellRecord], None] | None, progress: Progress | None,
                 meter: CpuMeter | None, timer: Timer | None, clock: Callable[[], float],
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings, self.baseline, self.total = settings, baseline, total
        self.on_cell, self.progress = on_cell, progress
        self.meter = meter or CpuMeter()
        self.timer = timer or timer_for(settings.device)
        self.clock, self.sleep = clock, sleep
        self.done: list[tuple[int, CellRecord]] = []
        #: busy blocks in a row, over every cell (the back-off doubles with each).
        self.busy_streak = 0

    def emit(self, order: int, cell: CellRecord) -> None:
        self.done.append((order, cell))
        if self.on_cell is not None:
            self.on_cell(cell)
        if self.progress is not None:
            self.progress(len(self.done), self.total, cell)

    def failed(self, order: int, subject: Subject, batch_size: int, seq_len: int, status: str, message: str,
               **fields: Any) -> None:
        logger.warning("cell %s/%s b=%d s=%d failed: %s", subject.variant, subject.backend, batch_size, seq_len,
                       message)
        self.emit(order, self.record(subject, batch_size, seq_len, status=status, error=message, **fields))

    def record(self, subject: Subject, batch_size: int, seq_len: int, extra: dict[str, Any] | None = None,
               **fields: Any) -> CellRecord:
        s = self.settings
        macs, eff = _macs(subject.model, batch_size, seq_len, s.include_head)
        return CellRecord(
            variant=subject.variant, backend=subject.backend, batch_size=batch_size, seq_len=seq_len,
            baseline=self.baseline.variant, device=s.device, threads=torch.get_num_threads(),
            include_head=s.include_head, pad_fraction=s.pad_fraction, macs=macs, effective_macs=eff,
            extra={**subject.extra, **(extra or {})}, **fields,
        )

    def call(self, subject: Subject, batch: Batch) -> Callable[[], Any]:
        """The zero-argument call of ``subject`` on ``batch`` (its own builder, else the model's forward)."""
        if subject.call_for is not None:
            return subject.call_for(batch)
        return forward_call(subject.model, batch, include_head=self.settings.include_head)

    def open(self, order: int, baseline: Subject, candidate: Subject, batch: Batch,
             batch_size: int, seq_len: int) -> CellState | None:
        s = self.settings
        try:
            base_fn, cand_fn = self.call(baseline, batch), self.call(candidate, batch)
        except (RuntimeError, ValueError) as exc:
            self.failed(order, candidate, batch_size, seq_len, *cell_failure(exc))
            return None
        blocks = PairedBlocks(base_fn, cand_fn, self.timer, clock=self.clock, warmup=s.warmup,
                              block_warmup=s.block_warmup, calls_per_sample=s.calls_per_sample)
        probe = LoadProbe(self.meter, threads=torch.get_num_threads(), busy_share=s.busy_share,
                          allow_busy=s.allow_busy)
        return CellState(order, batch_size, seq_len, baseline, candidate, batch, blocks, probe)

    def step(self, cell: CellState) -> bool:
        """Time one block of ``cell``; True when the cell is finished (stopped or failed) and was emitted.

        Both subjects' checks run right before the block: nothing may change a runnable (its mode, say)
        between two blocks and still be timed.
        """
        s, pb = self.settings, cell.blocks
        try:
            for subject in (cell.baseline, cell.candidate):
                if subject.check is not None:
                    subject.check()
        except CellRejected as exc:
            logger.warning("cell %s/%s b=%d stopped before a block: %s", cell.candidate.variant,
                           cell.candidate.backend, cell.batch_size, exc)
            base_macs = _macs(cell.baseline.model, cell.batch_size, cell.seq_len, s.include_head)[0]
            record = self.record(cell.candidate, cell.batch_size, cell.seq_len, baseline_macs=base_macs,
                                 **exc.fields)
            self.emit(cell.order, _with_ideal(record))
            return True
        cell.probe.start()
        try:
            with torch.inference_mode():
                pb.time_block(s.block_pairs)
        except (RuntimeError, ValueError) as exc:
            cell.probe.stop()
            self.failed(cell.order, cell.candidate, cell.batch_size, cell.seq_len, *cell_failure(exc))
            return True
        if cell.probe.stop() and not s.allow_busy:
            pb.discard_block()
            self.back_off(cell)
        else:
            pb.close_block()
            self.busy_streak = 0
        reason = self.stop_reason(pb, cell.spent_s)
        if not reason:
            return False
        self.finish(cell, reason)
        return True

    def back_off(self, cell: CellState) -> None:
        """Sleep after a discarded block (longer with every busy block in a row), charged to ``cell``."""
        self.busy_streak += 1
        wait = min(BACKOFF_S * 2 ** (self.busy_streak - 1), MAX_BACKOFF_S)
        self.sleep(wait)
        cell.waited_s += wait

    def stop_reason(self, pb: PairedBlocks, spent_s: float | None = None) -> str:
        """Why the cell stops now (empty: it goes on); ``spent_s`` is all it has cost (default its blocks)."""
        s = self.settings
        spent = pb.spent_s if spent_s is None else spent_s
        if spent >= s.max_time:
            return "max_time"
        if pb.n_pairs >= s.max_pairs:
            return "max_pairs"
        if pb.n_pairs < s.min_pairs or spent < s.min_time or pb.n_blocks < s.min_blocks:
            return ""
        if s.target_ci is None:
            return "min_reached"
        return "precision" if pb.rel_half_width(s.confidence) <= s.target_ci else ""

    def finish(self, cell: CellState, reason: str) -> None:
        s, cand, pb = self.settings, cell.candidate, cell.blocks
        load = cell.probe.finish()
        if pb.discarded and pb.n_blocks < s.min_blocks:
            self.unmeasured(cell, reason, load)
            return
        result = pb.result(confidence=s.confidence, n_boot=s.n_boot, seed=s.seed, stop_reason=reason,
                           threads=torch.get_num_threads(), timer_kind=self.timer.kind)
        peak, note = None, {}
        if s.measure_memory:
            try:
                peak = (cand.memory(cell.batch) if cand.memory is not None
                        else peak_forward_memory(self.call(cand, cell.batch), s.device))
            except (RuntimeError, ValueError) as exc:
                note = {"memory_error": cell_failure(exc)[1]}
        base_macs = _macs(cell.baseline.model, cell.batch_size, cell.seq_len, s.include_head)[0]
        record = self.record(cand, cell.batch_size, cell.seq_len, **_figures(result, cell),
                             peak_memory_bytes=peak, baseline_macs=base_macs, **load, extra=note)
        record = _with_ideal(record)
        logger.debug("cell %s/%s b=%d: %.3f [%.3f, %.3f] in %d blocks (%s)", cand.variant, cand.backend,
                     cell.batch_size, result.speedup, result.ci_low, result.ci_high, result.n_pairs, reason)
        self.emit(cell.order, record)

    def unmeasured(self, cell: CellState, reason: str, load: dict[str, Any]) -> None:
        """Store a cell the busy machine left without its minimum of quiet blocks: status ``unmeasured``, a
        one-line reason, and what its quiet blocks gave (never shown as a ratio)."""
        s, pb = self.settings, cell.blocks
        peak = load.get("other_cores_max")
        busy = f"; other processes held up to {peak:.2f} cores" if isinstance(peak, float) else ""
        message = (f"machine busy: {pb.n_blocks} of {s.min_blocks} quiet blocks in {cell.spent_s:.1f} s "
                   f"({pb.discarded} discarded{busy})")
        figures: dict[str, Any] = {}
        if pb.n_blocks:
            result = pb.result(confidence=s.confidence, n_boot=s.n_boot, seed=s.seed, stop_reason=reason,
                               threads=torch.get_num_threads(), timer_kind=self.timer.kind)
            figures = _figures(result, cell)
        logger.warning("cell %s/%s b=%d unmeasured: %s", cell.candidate.variant, cell.candidate.backend,
                       cell.batch_size, message)
        base_macs = _macs(cell.baseline.model, cell.batch_size, cell.seq_len, s.include_head)[0]
        record = self.record(cell.candidate, cell.batch_size, cell.seq_len,
                             **{**figures, "stop_reason": reason}, status=UNMEASURED, error=message,
                             baseline_macs=base_macs, **load)
        self.emit(cell.order, _with_ideal(record))


def _figures(result: PairedResult, cell: CellState) -> dict[str, Any]:
    """The record's timing fields from a paired result (milliseconds, per second)."""
    lat = result.candidate
    out: dict[str, Any] = {
        "latency_ms": lat.median * 1e3, "latency_p90_ms": lat.p90 * 1e3, "latency_cv": lat.cv,
        "baseline_latency_ms": result.baseline.median * 1e3, "speedup": result.speedup,
        "speedup_ci_low": result.ci_low, "speedup_ci_high": result.ci_high, "n_pairs": result.n_pairs,
        "n_blocks": len(result.block_sizes), "stop_reason": result.stop_reason, "timing": result.to_dict(),
    }
    if lat.median > 0:
        out["throughput_samples_s"] = cell.batch_size / lat.median
        out["throughput_tokens_s"] = cell.batch_size * cell.seq_len / lat.median
    return out


def _with_ideal(record: CellRecord) -> CellRecord:
    return replace(record, flop_ideal_speedup=flop_ideal(record.baseline_macs, record.effective_macs))
