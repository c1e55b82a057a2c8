"""Sweeps: every model against a baseline across batch sizes and sequence lengths, one cell at a time.

Each cell is one candidate timed *paired* against the baseline (:func:`prunebench.bench.timing.time_paired`)
on identical inputs, plus its FLOPs and peak memory. A cell that fails (out of memory, a runtime error)
is recorded with its status and message and the sweep goes on. ``on_cell`` receives each record the
moment it is finished, so a caller can persist it and a kill loses nothing already measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from prunebench.bench.flops import forward_macs
from prunebench.bench.inputs import check_device, forward_call, make_inputs
from prunebench.bench.memory import peak_forward_memory
from prunebench.bench.records import CellResult, LatencyStats
from prunebench.bench.settings import BenchSettings
from prunebench.bench.stats import summarize
from prunebench.bench.timing import measure, pinned_threads, time_paired, timer_for
from prunebench.models.adapters import find_adapter
from prunebench.models.batch import Batch

logger = logging.getLogger(__name__)

InputFn = Callable[[int, int], Batch]
Progress = Callable[[int, int, CellResult], None]


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


def _cell(model: nn.Module, name: str, baseline_name: str, batch_size: int, seq_len: int, settings: BenchSettings,
          latency: LatencyStats | None, **fields: Any) -> CellResult:
    """A finished cell: throughput from the median latency, MACs, optional peak memory."""
    macs, macs_eff = _macs(model, batch_size, seq_len, settings.include_head)
    tput = {}
    if latency is not None and latency.median > 0:
        tput = {"samples_per_s": batch_size / latency.median, "tokens_per_s": batch_size * seq_len / latency.median}
    return CellResult(
        model=name, baseline=baseline_name, batch_size=batch_size, seq_len=seq_len, device=settings.device,
        threads=latency.threads if latency is not None else settings.threads, include_head=settings.include_head,
        pad_fraction=settings.pad_fraction, latency=latency, macs=macs, macs_effective=macs_eff, **tput, **fields,
    )


def _peak(fn: Callable[[], Any], settings: BenchSettings) -> int | None:
    return peak_forward_memory(fn, settings.device) if settings.measure_memory else None


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
) -> CellResult:
    """Time ``candidate`` against ``baseline`` on one input shape (one sweep cell).

    Args:
        baseline, candidate: models already on ``settings.device`` and in eval mode.
        batch_size, seq_len: the input shape.
        settings: budget and conditions (default :class:`BenchSettings`).
        inputs: the batch to use; by default seeded inputs from :func:`make_inputs`.
        name, baseline_name: labels stored in the record.

    Returns:
        The candidate's cell. Failures (RuntimeError such as out-of-memory, ValueError) are returned as a
        cell with ``status`` ``"oom"`` or ``"error"`` and a one-line ``message``, never raised.
    """
    settings = settings or BenchSettings()
    # Everything (MACs, memory too) runs at the pinned thread count: an oversubscribed default can make even
    # counting non-zeros 10x slower on a shared machine.
    with pinned_threads(settings.threads):
        try:
            for model in (baseline, candidate):
                check_device(model, settings.device)
            batch = inputs if inputs is not None else default_input_fn((baseline, candidate), settings)(
                batch_size, seq_len)
            base_fn = forward_call(baseline, batch, include_head=settings.include_head)
            cand_fn = forward_call(candidate, batch, include_head=settings.include_head)
            result = time_paired(base_fn, cand_fn, timer=timer_for(settings.device), **settings.compare_kwargs())
            peak = _peak(cand_fn, settings)
        except (RuntimeError, ValueError) as exc:
            status, message = _failure(exc)
            logger.warning("cell %s b=%d s=%d failed: %s", name, batch_size, seq_len, message)
            return _cell(candidate, name, baseline_name, batch_size, seq_len, settings, None, status=status,
                         message=message)
        return _cell(
            candidate, name, baseline_name, batch_size, seq_len, settings, result.candidate,
            speedup=result.speedup, ci_low=result.ci_low, ci_high=result.ci_high, n_pairs=result.n_pairs,
            comparison=result, peak_memory_bytes=peak,
        )


def bench_single(
    model: nn.Module,
    batch_size: int,
    seq_len: int,
    *,
    settings: BenchSettings | None = None,
    inputs: Batch | None = None,
    name: str = "dense",
) -> CellResult:
    """Time one model alone (its own baseline: speedup 1). Failures are returned as in :func:`bench_pair`."""
    settings = settings or BenchSettings()
    with pinned_threads(settings.threads):
        try:
            check_device(model, settings.device)
            batch = inputs if inputs is not None else default_input_fn((model,), settings)(batch_size, seq_len)
            fn = forward_call(model, batch, include_head=settings.include_head)
            stats = measure(fn, timer=timer_for(settings.device), **settings.measure_kwargs())
            peak = _peak(fn, settings)
        except (RuntimeError, ValueError) as exc:
            status, message = _failure(exc)
            logger.warning("cell %s b=%d s=%d failed: %s", name, batch_size, seq_len, message)
            return _cell(model, name, name, batch_size, seq_len, settings, None, status=status, message=message)
        return _cell(model, name, name, batch_size, seq_len, settings, stats, speedup=1.0, ci_low=1.0,
                     ci_high=1.0, peak_memory_bytes=peak)


def _baseline_cell(model: nn.Module, name: str, batch: Batch, pairs: Sequence[CellResult], batch_size: int,
                   seq_len: int, settings: BenchSettings) -> CellResult:
    """The baseline's own cell: its side of every paired run at this shape, pooled (timed alone if none ran)."""
    done = [c.comparison for c in pairs if c.comparison is not None]
    if not done:
        return bench_single(model, batch_size, seq_len, settings=settings, inputs=batch, name=name)
    samples = [s for r in done for s in r.baseline.samples]
    first = done[0].baseline
    stats = summarize(samples, first_call_s=first.first_call_s, warmup=first.warmup,
                      calls_per_sample=first.calls_per_sample, threads=first.threads, timer=first.timer)
    pooled = {"pooled_from": [c.model for c in pairs if c.comparison is not None]}
    with pinned_threads(settings.threads):
        try:
            peak = _peak(forward_call(model, batch, include_head=settings.include_head), settings)
        except (RuntimeError, ValueError) as exc:
            return _cell(model, name, name, batch_size, seq_len, settings, stats, speedup=1.0, ci_low=1.0,
                         ci_high=1.0, message=f"peak memory failed: {_failure(exc)[1]}", extra=pooled)
        return _cell(model, name, name, batch_size, seq_len, settings, stats, speedup=1.0, ci_low=1.0,
                     ci_high=1.0, peak_memory_bytes=peak, extra=pooled)


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
    on_cell: Callable[[CellResult], None] | None = None,
    progress: Progress | None = None,
) -> list[CellResult]:
    """Time every model against ``baseline`` at every (batch size, sequence length).

    For each shape, each non-baseline model is one paired cell; then the baseline's own cell follows
    (its samples pooled from those pairs). Cells are produced in that order.

    Args:
        models: name -> model (eval mode, on ``settings.device``); must contain ``baseline``.
        input_fn: ``(batch_size, seq_len) -> batch``; by default seeded inputs shared by all models.
        batch_sizes, seq_lens: the grid.
        baseline: name of the reference model.
        settings: budget and conditions (default :class:`BenchSettings`).
        on_cell: called with each finished cell (also failed ones), in order.
        progress: called as ``progress(done, total, cell)`` after each cell (the library never prints).

    Returns:
        All cells, in the order produced.
    """
    settings = settings or BenchSettings()
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not among the models; choose from: {', '.join(models)}")
    _check_shapes(batch_sizes, seq_lens)
    for model in models.values():
        check_device(model, settings.device)
    input_fn = input_fn or default_input_fn(models.values(), settings)
    base = models[baseline]
    others = [(n, m) for n, m in models.items() if n != baseline]
    total = len(seq_lens) * len(batch_sizes) * len(models)
    cells: list[CellResult] = []

    def emit(cell: CellResult) -> None:
        cells.append(cell)
        if on_cell is not None:
            on_cell(cell)
        if progress is not None:
            progress(len(cells), total, cell)

    for seq_len in seq_lens:
        for batch_size in batch_sizes:
            try:
                batch = input_fn(batch_size, seq_len)
            except (RuntimeError, ValueError) as exc:  # e.g. out of memory building the inputs
                status, message = _failure(exc)
                for name, model in [*others, (baseline, base)]:
                    emit(_cell(model, name, baseline, batch_size, seq_len, settings, None, status=status,
                               message=f"inputs: {message}"))
                continue
            pairs = []
            for name, model in others:
                cell = bench_pair(base, model, batch_size, seq_len, settings=settings, inputs=batch, name=name,
                                  baseline_name=baseline)
                pairs.append(cell)
                emit(cell)
            emit(_baseline_cell(base, baseline, batch, pairs, batch_size, seq_len, settings))
    return cells

