"""The one sweep: every model against a baseline across shapes, timed in blocks spread over the whole sweep.

Both ``prunebench bench`` and ``prunebench run`` time through :func:`sweep`. Each cell (model, shape) is a
:class:`~prunebench.bench.blocks.PairedBlocks` of the baseline against that model on identical inputs; the
baseline's own cell times it against an identical twin (a deep copy), so its interval is the measured noise
floor at that shape. Cells are visited round-robin, one block each per round (the direction alternates
between rounds), until each meets its stopping rule: machine drift during the sweep then lands in every cell,
between its blocks, where the block-bootstrap CI covers it. A block during which other processes held the
cores it needs is discarded and timed again after a back-off (:mod:`prunebench.bench.sweep_state`); a cell
that cannot gather its quiet blocks in time is stored ``unmeasured``. A cell is finished (FLOPs, peak
memory, machine load added) and handed to ``on_cell`` the moment it stops, so a kill loses only cells still
being timed. A cell that fails (out of memory, a runtime error) is recorded with its status and the sweep
goes on.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from torch import nn

from prunebench.bench.inputs import check_device, make_inputs
from prunebench.bench.load import CpuMeter
from prunebench.bench.settings import BenchSettings
from prunebench.bench.sweep_state import CellState, Progress, Subject, SweepState, cell_failure
from prunebench.bench.timing import Timer, pinned_threads
from prunebench.models.adapters import find_adapter
from prunebench.models.batch import Batch
from prunebench.results.cell import DEFAULT_BACKEND, CellRecord

logger = logging.getLogger(__name__)

InputFn = Callable[[int, int], Batch]
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


def _check_shapes(batch_sizes: Sequence[int], seq_lens: Sequence[int]) -> None:
    for label, values in (("batch size", batch_sizes), ("sequence length", seq_lens)):
        if len(values) == 0:
            raise ValueError(f"need at least one {label}")
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{label} must be a positive integer, got {v!r}")


def sweep(
    models: Mapping[str, nn.Module | Subject],
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
    meter: CpuMeter | None = None,
    timer: Timer | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> list[CellRecord]:
    """Time every model against ``baseline`` at every (batch size, sequence length); see the module docstring.

    Args:
        models: name -> model (eval mode, on ``settings.device``) or :class:`Subject` (e.g. a backend's
            runnable with its eager model, its own call, check and record fields); must contain ``baseline``.
            The baseline's own cell is timed against a deep copy of it (the noise floor; a baseline subject
            with its own call cannot be copied, so its cell must be skipped).
        input_fn: ``(batch_size, seq_len) -> batch``; by default seeded inputs shared by all models.
        batch_sizes, seq_lens: the grid.
        baseline: name of the reference model.
        settings: budget and conditions (default :class:`BenchSettings`).
        on_cell: called with each cell (also failed ones) the moment it is finished.
        progress: called as ``progress(done, total, cell)`` after each cell (the library never prints).
        skip: cells for which it returns True are not timed (and not returned).
        backend: recorded in the key of every cell whose model is a plain module (a subject names its own).
        meter: reads how much CPU other processes used around every block (default: a new
            :class:`~prunebench.bench.load.CpuMeter`; tests pass one reading a faked machine).
        timer, clock: how one call is timed and the budget clock (default: the device's timer and
            ``time.perf_counter``; tests pass a fake clock).
        sleep: the back-off after a busy block (tests pass a fake).

    Returns:
        The cells measured, in grid order (seq len, batch size, then the models with the baseline last).
    """
    settings = settings or BenchSettings()
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not among the models; choose from: {', '.join(models)}")
    _check_shapes(batch_sizes, seq_lens)
    subjects = {n: m if isinstance(m, Subject) else Subject(n, m, backend) for n, m in models.items()}
    for subject in subjects.values():
        check_device(subject.model, settings.device)
    input_fn = input_fn or default_input_fn((s.model for s in subjects.values()), settings)
    base = subjects[baseline]
    names = [*(n for n in subjects if n != baseline), baseline]
    grid = [(s, b, n) for s in seq_lens for b in batch_sizes for n in names if not (skip and skip(n, b, s))]
    run = SweepState(settings, base, len(grid), on_cell, progress, meter, timer, clock, sleep)
    with pinned_threads(settings.threads):
        twin = _twin(base) if any(n == baseline for _, _, n in grid) else None
        active: list[CellState] = []
        batches: dict[tuple[int, int], Batch | str] = {}
        for order, (seq_len, batch_size, name) in enumerate(grid):
            if (batch_size, seq_len) not in batches:
                try:
                    batches[(batch_size, seq_len)] = input_fn(batch_size, seq_len)
                except (RuntimeError, ValueError) as exc:  # e.g. out of memory building the inputs
                    batches[(batch_size, seq_len)] = "inputs: " + cell_failure(exc)[1]
            batch = batches[(batch_size, seq_len)]
            if isinstance(batch, str):
                status = "oom" if "out of memory" in batch.lower() else "error"
                run.failed(order, subjects[name], batch_size, seq_len, status, batch)
                continue
            candidate = twin if name == baseline and twin is not None else subjects[name]
            cell = run.open(order, base, candidate, batch, batch_size, seq_len)
            if cell is not None:
                active.append(cell)
        rnd = 0
        while active:
            visit = active if rnd % 2 == 0 else active[::-1]
            finished = {id(c) for c in visit if run.step(c)}
            active = [c for c in active if id(c) not in finished]
            rnd += 1
    return [cell for _, cell in sorted(run.done, key=lambda oc: oc[0])]


def _twin(base: Subject) -> Subject:
    """An identical copy of the baseline to time it against (its own cell: the noise floor)."""
    if base.call_for is not None:
        raise ValueError(f"baseline {base.variant!r} has its own call and cannot be twinned; skip its cell")
    return replace(base, model=copy.deepcopy(base.model))


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
