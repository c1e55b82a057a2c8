"""The one sweep: every model against a baseline across shapes, timed in blocks spread over the whole sweep.

Both ``prunebench bench`` and ``prunebench run`` time through :func:`sweep`. Each cell (model, shape) is a
:class:`~prunebench.bench.blocks.PairedBlocks` of the baseline against that model on identical inputs; the
baseline's own cell times it against an identical twin (a deep copy), so its interval is the measured noise
floor at that shape. Cells are visited round-robin, one block each per round (the direction alternates
between rounds), until each meets its stopping rule: machine drift during the sweep then lands in every cell,
between its blocks, where the block-bootstrap CI covers it. A cell is finished (FLOPs, peak memory, machine
load added) and handed to ``on_cell`` the moment it stops, so a kill loses only cells still being timed. A
cell that fails (out of memory, a runtime error) is recorded with its status and the sweep goes on.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from prunebench.bench.blocks import PairedBlocks
from prunebench.bench.flops import forward_macs
from prunebench.bench.inputs import check_device, forward_call, make_inputs
from prunebench.bench.load import LoadProbe
from prunebench.bench.memory import peak_forward_memory
from prunebench.bench.records import PairedResult
from prunebench.bench.settings import BenchSettings
from prunebench.bench.timing import Timer, pinned_threads, timer_for
from prunebench.models.adapters import find_adapter
from prunebench.models.batch import Batch
from prunebench.results.cell import DEFAULT_BACKEND, CellRecord, flop_ideal

logger = logging.getLogger(__name__)

InputFn = Callable[[int, int], Batch]
Progress = Callable[[int, int, CellRecord], None]
#: ``skip(variant, batch_size, seq_len) -> bool``: cells already measured (a resumed run) are not timed again.
Skip = Callable[[str, int, int], bool]


def default_input_fn(models: Iterable[nn.Module], settings: BenchSettings) -> InputFn:
    """Seeded inputs valid for every model (ids drawn below the smallest vocabulary)."""
    adapters = [a for a in map(find_adapter, models) if a is not None]
    vocabs = [a.vocab_size for a in adapters]
    if not vocabs:
        raise ValueError("pass input_fn: default inputs need at least one model with an architecture adapter "
                         "(e.g. a prunebench TransformerEncoder)")
    vocab = min(vocabs)

    def fn(batch_size: int, seq_len: int) -> Batch:
        return make_inputs(vocab, batch_size, seq_len, seed=settings.seed, pad_fraction=settings.pad_fraction,
                           device=settings.device)

    return fn


def _macs(model: nn.Module, batch_size: int, seq_len: int, include_head: bool) -> tuple[int | None, int | None]:
    if find_adapter(model) is None:
        return None, None
    dense = forward_macs(model, batch_size, seq_len, include_head=include_head)
    eff = forward_macs(model, batch_size, seq_len, include_head=include_head, effective=True)
    return dense, eff


def _failure(exc: BaseException) -> tuple[str, str]:
    """(status, one-line message) of a failed cell."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    oom = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text.lower()
    if oom and torch.cuda.is_available():
        torch.cuda.empty_cache()  # give the next cell a clean slate
    return ("oom" if oom else "error"), f"{type(exc).__name__}: {text}"


@dataclass
class _Cell:
    """One cell being timed: what it compares, its blocks so far and its load probe."""

    name: str
    order: int
    batch_size: int
    seq_len: int
    baseline: nn.Module
    candidate: nn.Module
    batch: Batch
    blocks: PairedBlocks
    probe: LoadProbe = field(default_factory=LoadProbe)


class _Sweep:
    """The state of one sweep: settings, the baseline, and how finished cells are reported."""

    def __init__(self, settings: BenchSettings, baseline: str, backend: str, total: int,
                 on_cell: Callable[[CellRecord], None] | None, progress: Progress | None,
                 probe: Callable[[], LoadProbe], timer: Timer | None, clock: Callable[[], float]) -> None:
        self.settings, self.baseline, self.backend, self.total = settings, baseline, backend, total
        self.on_cell, self.progress, self.probe = on_cell, progress, probe
        self.timer = timer or timer_for(settings.device)
        self.clock = clock
        self.done: list[tuple[int, CellRecord]] = []

    def emit(self, order: int, cell: CellRecord) -> None:
        self.done.append((order, cell))
        if self.on_cell is not None:
            self.on_cell(cell)
        if self.progress is not None:
            self.progress(len(self.done), self.total, cell)

    def failed(self, order: int, name: str, model: nn.Module | None, batch_size: int, seq_len: int, status: str,
               message: str, **fields: Any) -> None:
        logger.warning("cell %s b=%d s=%d failed: %s", name, batch_size, seq_len, message)
        self.emit(order, self.record(name, model, batch_size, seq_len, status=status, error=message, **fields))

    def record(self, name: str, model: nn.Module | None, batch_size: int, seq_len: int, **fields: Any) -> CellRecord:
        s = self.settings
        macs, eff = _macs(model, batch_size, seq_len, s.include_head) if model is not None else (None, None)
        return CellRecord(
            variant=name, backend=self.backend, batch_size=batch_size, seq_len=seq_len, baseline=self.baseline,
            device=s.device, threads=torch.get_num_threads(), include_head=s.include_head,
            pad_fraction=s.pad_fraction, macs=macs, effective_macs=eff, **fields,
        )

    def open(self, order: int, name: str, baseline: nn.Module, candidate: nn.Module, batch: Batch,
             batch_size: int, seq_len: int) -> _Cell | None:
        s = self.settings
        try:
            base_fn = forward_call(baseline, batch, include_head=s.include_head)
            cand_fn = forward_call(candidate, batch, include_head=s.include_head)
        except (RuntimeError, ValueError) as exc:
            self.failed(order, name, candidate, batch_size, seq_len, *_failure(exc))
            return None
        blocks = PairedBlocks(base_fn, cand_fn, self.timer, clock=self.clock, warmup=s.warmup,
                              block_warmup=s.block_warmup, calls_per_sample=s.calls_per_sample)
        return _Cell(name, order, batch_size, seq_len, baseline, candidate, batch, blocks, self.probe())

    def step(self, cell: _Cell) -> bool:
        """Time one block of ``cell``; True when the cell is finished (stopped or failed) and was emitted."""
        s, pb = self.settings, cell.blocks
        cell.probe.start()
        try:
            with torch.inference_mode():
                pb.block(s.block_pairs)
        except (RuntimeError, ValueError) as exc:
            self.failed(cell.order, cell.name, cell.candidate, cell.batch_size, cell.seq_len, *_failure(exc))
            return True
        finally:
            cell.probe.stop()
        reason = self.stop_reason(pb)
        if not reason:
            return False
        self.finish(cell, reason)
        return True

    def stop_reason(self, pb: PairedBlocks) -> str:
        s = self.settings
        if pb.spent_s >= s.max_time:
            return "max_time"
        if pb.n_pairs >= s.max_pairs:
            return "max_pairs"
        if pb.n_pairs < s.min_pairs or pb.spent_s < s.min_time or pb.n_blocks < s.min_blocks:
            return ""
        if s.target_ci is None:
            return "min_reached"
        return "precision" if pb.rel_half_width(s.confidence) <= s.target_ci else ""

    def finish(self, cell: _Cell, reason: str) -> None:
        s = self.settings
        result = cell.blocks.result(confidence=s.confidence, n_boot=s.n_boot, seed=s.seed, stop_reason=reason,
                                    threads=torch.get_num_threads(), timer_kind=self.timer.kind)
        load = cell.probe.finish()
        peak, note = None, {}
        if s.measure_memory:
            try:
                peak = peak_forward_memory(forward_call(cell.candidate, cell.batch, include_head=s.include_head),
                                           s.device)
            except (RuntimeError, ValueError) as exc:
                note = {"memory_error": _failure(exc)[1]}
        base_macs = _macs(cell.baseline, cell.batch_size, cell.seq_len, s.include_head)[0]
        record = self.record(cell.name, cell.candidate, cell.batch_size, cell.seq_len, **_figures(result, cell),
                             peak_memory_bytes=peak, baseline_macs=base_macs, **load, extra=note)
        record = _with_ideal(record)
        logger.debug("cell %s b=%d: %.3f [%.3f, %.3f] in %d blocks (%s)", cell.name, cell.batch_size,
                     result.speedup, result.ci_low, result.ci_high, result.n_pairs, reason)
        self.emit(cell.order, record)


def _figures(result: PairedResult, cell: _Cell) -> dict[str, Any]:
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


def _check_shapes(batch_sizes: Sequence[int], seq_lens: Sequence[int]) -> None:
    for label, values in (("batch size", batch_sizes), ("sequence length", seq_lens)):
        if len(values) == 0:
            raise ValueError(f"need at least one {label}")
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{label} must be a positive integer, got {v!r}")


def sweep(
    models: dict[str, nn.Module],
    input_fn: InputFn | None = None,
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16),
    seq_lens: Sequence[int] = (128,),
    baseline: str = "dense",
    *,
    settings: BenchSettings | None = None,
    on_cell: Callable[[CellRecord], None] | None = None,
    progress: Progress | None = None,
    skip: Skip | None = None,
    backend: str = DEFAULT_BACKEND,
    probe: Callable[[], LoadProbe] = LoadProbe,
    timer: Timer | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[CellRecord]:
    """Time every model against ``baseline`` at every (batch size, sequence length); see the module docstring.

    Args:
        models: name -> model (eval mode, on ``settings.device``); must contain ``baseline``. The baseline's
            own cell is timed against a deep copy of it (the noise floor).
        input_fn: ``(batch_size, seq_len) -> batch``; by default seeded inputs shared by all models.
        batch_sizes, seq_lens: the grid.
        baseline: name of the reference model.
        settings: budget and conditions (default :class:`BenchSettings`).
        on_cell: called with each cell (also failed ones) the moment it is finished.
        progress: called as ``progress(done, total, cell)`` after each cell (the library never prints).
        skip: cells for which it returns True are not timed (and not returned).
        backend: recorded in every cell's key.
        probe: makes the machine-load probe of each cell (tests pass a faked load).
        timer, clock: how one call is timed and the budget clock (default: the device's timer and
            ``time.perf_counter``; tests pass a fake clock).

    Returns:
        The cells measured, in grid order (seq len, batch size, then the models with the baseline last).
    """
    settings = settings or BenchSettings()
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not among the models; choose from: {', '.join(models)}")
    _check_shapes(batch_sizes, seq_lens)
    for model in models.values():
        check_device(model, settings.device)
    input_fn = input_fn or default_input_fn(models.values(), settings)
    base = models[baseline]
    names = [*(n for n in models if n != baseline), baseline]
    grid = [(s, b, n) for s in seq_lens for b in batch_sizes for n in names if not (skip and skip(n, b, s))]
    run = _Sweep(settings, baseline, backend, len(grid), on_cell, progress, probe, timer, clock)
    with pinned_threads(settings.threads):
        twin = copy.deepcopy(base) if any(n == baseline for _, _, n in grid) else None
        active: list[_Cell] = []
        batches: dict[tuple[int, int], Batch | str] = {}
        for order, (seq_len, batch_size, name) in enumerate(grid):
            if (batch_size, seq_len) not in batches:
                try:
                    batches[(batch_size, seq_len)] = input_fn(batch_size, seq_len)
                except (RuntimeError, ValueError) as exc:  # e.g. out of memory building the inputs
                    batches[(batch_size, seq_len)] = "inputs: " + _failure(exc)[1]
            batch = batches[(batch_size, seq_len)]
            if isinstance(batch, str):
                status = "oom" if "out of memory" in batch.lower() else "error"
                run.failed(order, name, models[name], batch_size, seq_len, status, batch)
                continue
            candidate = twin if name == baseline else models[name]
            cell = run.open(order, name, base, candidate, batch, batch_size, seq_len)
            if cell is not None:
                active.append(cell)
        rnd = 0
        while active:
            visit = active if rnd % 2 == 0 else active[::-1]
            finished = {id(c) for c in visit if run.step(c)}
            active = [c for c in active if id(c) not in finished]
            rnd += 1
    return [cell for _, cell in sorted(run.done, key=lambda oc: oc[0])]


def bench_pair(
    baseline: nn.Module,
    candidate: nn.Module,
    batch_size: int,
    seq_len: int,
    *,
    settings: BenchSettings | None = None,
    inputs: Batch | None = None,
    name: str = "candidate",
    baseline_name: str = "dense",
) -> CellRecord:
    """Time ``candidate`` against ``baseline`` on one input shape: a sweep of one cell.

    Returns:
        The candidate's cell. Failures (RuntimeError such as out-of-memory, ValueError) are returned as a
        cell with ``status`` ``"oom"`` or ``"error"`` and a one-line ``error``, never raised.
    """
    settings = settings or BenchSettings()
    models = {baseline_name: baseline, name: candidate}
    fn = (lambda b, s: inputs) if inputs is not None else None
    (cell,) = sweep(models, fn, (batch_size,), (seq_len,), baseline_name, settings=settings,
                    skip=lambda n, b, s: n == baseline_name)
    return cell


def bench_single(
    model: nn.Module,
    batch_size: int,
    seq_len: int,
    *,
    settings: BenchSettings | None = None,
    inputs: Batch | None = None,
    name: str = "dense",
) -> CellRecord:
    """Time one model against an identical twin of itself: its latency, and the noise floor as its CI."""
    fn = (lambda b, s: inputs) if inputs is not None else None
    (cell,) = sweep({name: model}, fn, (batch_size,), (seq_len,), name, settings=settings)
    return cell
