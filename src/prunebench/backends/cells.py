"""Benchmark cells over (variant, backend): each runnable checked against its eager model, then timed in blocks.

The runnables of one batch size are timed by one block sweep (:func:`prunebench.bench.sweep.sweep`) against
dense eager, like the eager cells: ABBA/BAAB blocks round-robin over the cells, a two-stage bootstrap CI, and
eval mode asserted on both runnables before every block. A cell is a
:class:`~prunebench.results.cell.CellRecord` keyed (variant, backend, batch size, sequence length); its
``extra`` records the baseline's backend, the fidelity check that preceded the timing, how threads and memory
were controlled, and the backend's environment. A runnable that fails its fidelity check (before the first
block, or its eval-mode check before a later one) is never timed: status ``error``, ``backend_status``
``fidelity``, a message that starts with ``fidelity:``, no timings. A backend that cannot express a variant,
or is not installed, is a skip: status ``skipped`` with its reason in ``error`` (a skip is not a failure: it
fails no run).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from prunebench.backends.base import BackendUnavailable, FidelityError, PrepareOptions, Runnable
from prunebench.backends.fidelity import assert_eval, check_fidelity
from prunebench.bench.flops import forward_macs
from prunebench.bench.inputs import make_inputs
from prunebench.bench.memory import peak_forward_memory
from prunebench.bench.settings import BenchSettings
from prunebench.bench.sweep import sweep
from prunebench.bench.sweep_state import CellRejected, Subject, cell_failure
from prunebench.bench.timing import pinned_threads
from prunebench.models.adapters import find_adapter
from prunebench.models.batch import Batch
from prunebench.results.cell import SKIPPED as CELL_SKIPPED
from prunebench.results.cell import CellRecord, flop_ideal

logger = logging.getLogger(__name__)

#: Cell status of a runnable whose outputs (or mode) failed the check before timing.
FIDELITY = "fidelity"
#: Cell status of a backend that cannot express a variant, or is not available here (the store's own status).
SKIPPED = CELL_SKIPPED


@dataclass
class Prepared:
    """A variant prepared on one backend, beside the eager model it must match.

    Attributes:
        variant: the variant's name (``dense``, ``structured@0.5``, ...).
        backend: the backend's name.
        reference: the variant's eager model (in eval mode).
        runnable: what is timed; None when the backend skipped this variant (``skip`` says why).
        skip: the reason of a skip ("" when prepared).
    """

    variant: str
    backend: str
    reference: nn.Module
    runnable: Runnable | None = None
    skip: str = ""


def prepare_variant(backend_obj: Any, variant: str, model: nn.Module, options: PrepareOptions) -> Prepared:
    """Prepare ``model`` on ``backend_obj``; unavailability and inexpressible variants become a skip."""
    name = backend_obj.name
    reason = backend_obj.availability() or backend_obj.skip_reason(model)
    if reason:
        return Prepared(variant, name, model, skip=reason)
    try:
        return Prepared(variant, name, model, runnable=backend_obj.prepare(model, options))
    except BackendUnavailable as exc:
        return Prepared(variant, name, model, skip=str(exc))


def runnable_peak_memory(runnable: Runnable, batch: Batch, device: str) -> int | None:
    """Peak memory of one call on ``batch``: the runtime's own measure if it has one, else torch's accounting."""
    if runnable.memory is not None:
        return runnable.memory(batch)
    return peak_forward_memory(runnable.bind(batch), device)


def _fields(base: Prepared, cand: Prepared) -> dict[str, Any]:
    runnable = cand.runnable
    extra: dict[str, Any] = {"baseline_backend": base.backend}
    if runnable is not None:
        extra.update(threads_control=runnable.threads, memory_method=runnable.memory_method,
                     backend_env=runnable.env, tolerance=runnable.tolerance.to_dict())
    return extra


def _macs(model: nn.Module, batch_size: int, seq_len: int) -> tuple[int | None, int | None]:
    if find_adapter(model) is None:
        return None, None
    return forward_macs(model, batch_size, seq_len), forward_macs(model, batch_size, seq_len, effective=True)


def _failure(status: str, message: str) -> dict[str, Any]:
    """The fields of a cell that was not timed: a skip (status ``skipped``, the reason as its message), or a
    failure (oom, error, or a failed fidelity check stored as ``error`` whose message starts with
    ``fidelity:``); ``backend_status`` keeps the kind itself."""
    if status == SKIPPED:
        store_status, error = SKIPPED, message
    else:
        store_status, error = (status if status in ("oom", "error") else "error"), f"{status}: {message}"
    return {"status": store_status, "error": error,
            "extra": {"backend_status": status, "backend_message": message}}


def _failed(base: Prepared, cand: Prepared, batch: Batch, settings: BenchSettings, status: str,
            message: str) -> CellRecord:
    """A cell that was never timed (see :func:`_failure`)."""
    batch_size, seq_len = (int(n) for n in batch["input_ids"].shape)
    macs, effective = _macs(cand.reference, batch_size, seq_len)
    baseline_macs, _ = _macs(base.reference, batch_size, seq_len)
    fields = _failure(status, message)
    return CellRecord(
        variant=cand.variant, backend=cand.backend, baseline=base.variant, batch_size=batch_size, seq_len=seq_len,
        device=settings.device, threads=settings.threads, include_head=False, pad_fraction=settings.pad_fraction,
        macs=macs, effective_macs=effective, baseline_macs=baseline_macs,
        flop_ideal_speedup=flop_ideal(baseline_macs, effective), status=fields["status"], error=fields["error"],
        extra={**_fields(base, cand), **fields["extra"]},
    )


def _eval_check(runnable: Runnable) -> Callable[[], None]:
    """The sweep's check before every block: eval mode, or the cell stops as a failed fidelity check."""

    def check() -> None:
        try:
            assert_eval(runnable)
        except FidelityError as exc:
            raise CellRejected(_failure(FIDELITY, str(exc))) from exc

    return check


def _subject(prepared: Prepared, runnable: Runnable, settings: BenchSettings, extra: dict[str, Any]) -> Subject:
    """A prepared runnable as a sweep subject: its own call, memory measure and eval check before each block."""
    def memory(batch: Batch) -> int | None:
        return runnable_peak_memory(runnable, batch, settings.device)

    return Subject(prepared.variant, prepared.reference, prepared.backend, call_for=runnable.bind,
                   check=_eval_check(runnable), memory=memory, extra=extra)


def _checked(base: Prepared, cand: Prepared, batch: Batch, settings: BenchSettings,
             text: Batch | None = None) -> Subject | CellRecord:
    """``cand`` as a subject once both sides matched their eager models on ``batch`` (and on the held-out task
    text ``text``, where there is one), else its untimed cell."""
    if cand.runnable is None or base.runnable is None:
        return _failed(base, cand, batch, settings, SKIPPED, cand.skip or base.skip)
    try:
        checks = [check_fidelity(r, p.reference, batch, text=text)
                  for p, r in ((base, base.runnable), (cand, cand.runnable))]
    except FidelityError as exc:
        logger.warning("cell %s/%s not timed: %s", cand.variant, cand.backend, exc)
        return _failed(base, cand, batch, settings, FIDELITY, str(exc))
    except (RuntimeError, ValueError) as exc:
        status, message = cell_failure(exc)
        return _failed(base, cand, batch, settings, status, message)
    bad = next((c for c in checks if not c.ok), None)
    if bad is not None:
        logger.warning("cell %s/%s not timed: %s", cand.variant, cand.backend, bad.message)
        return _failed(base, cand, batch, settings, FIDELITY, bad.message)
    extra = {**_fields(base, cand), "fidelity": checks[1].to_dict(), "backend_status": "ok"}
    return _subject(cand, cand.runnable, settings, extra)


#: The baseline's key in a backend sweep (candidates are keyed by their index; the baseline's own cell is skipped).
_BASE = "baseline"


def _sweep_batch(base: Prepared, prepared: Sequence[Prepared], batch: Batch, settings: BenchSettings,
                 on_cell: Callable[[CellRecord], None] | None, text: Batch | None = None,
                 **timing: Any) -> list[CellRecord]:
    """One block sweep at ``batch``'s shape of every prepared runnable against ``base``; cells in input order.

    Each runnable's fidelity check runs once, here, before the sweep's first block; a skip or a failed check
    is a cell that is never timed. The baseline's own cell is not timed: a backend cell's noise floor is the
    main sweep's eager twin at the same shape (``analysis.noise_margin``).
    """
    batch_size, seq_len = (int(n) for n in batch["input_ids"].shape)
    out: list[CellRecord | None] = []
    subjects: dict[str, Subject] = {}
    with pinned_threads(settings.threads):
        for i, cand in enumerate(prepared):
            got = _checked(base, cand, batch, settings, text)
            if isinstance(got, CellRecord):
                out.append(got)
                if on_cell is not None:
                    on_cell(got)
            else:
                out.append(None)
                subjects[str(i)] = got
        if subjects:
            assert base.runnable is not None  # else every candidate was a skip
            subjects[_BASE] = _subject(base, base.runnable, settings, {})
            timed = iter(sweep(subjects, lambda b, s: batch, (batch_size,), (seq_len,), _BASE, settings=settings,
                               on_cell=on_cell, skip=lambda n, b, s: n == _BASE, **timing))
            out = [cell if cell is not None else next(timed) for cell in out]
    return [cell for cell in out if cell is not None]


def backend_cell(base: Prepared, cand: Prepared, batch: Batch, settings: BenchSettings,
                 **timing: Any) -> CellRecord:
    """Time ``cand`` against ``base`` on ``batch`` after both passed their fidelity checks (a sweep of one cell).

    Failures never raise: a skip, a failed fidelity check (also one found before a later block), or a runtime
    error become the cell's status. ``timing``: ``timer`` / ``clock`` / ``meter`` / ``sleep`` of :func:`sweep` (tests).
    """
    (cell,) = _sweep_batch(base, [cand], batch, _backend_settings(settings), None, **timing)
    return cell


def _backend_settings(settings: BenchSettings) -> BenchSettings:
    # A runnable computes the encoder's hidden states: the head is never timed or counted.
    return replace(settings, include_head=False)


def bench_backends(
    prepared: Sequence[Prepared],
    baseline: Prepared,
    batch_sizes: Sequence[int],
    seq_len: int,
    settings: BenchSettings,
    *,
    vocab_size: int,
    on_cell: Callable[[CellRecord], None] | None = None,
    done: Callable[[str, str, int, int], bool] | None = None,
    check_text: Batch | None = None,
    **timing: Any,
) -> list[CellRecord]:
    """Every prepared (variant, backend) against ``baseline`` (dense eager): one block sweep per batch size.

    Args:
        prepared: the (variant, backend) runnables (skips included: they become skipped cells).
        baseline: dense on eager, what every speedup is relative to.
        batch_sizes, seq_len: the timed shapes.
        settings: the timing budget and conditions.
        vocab_size: inputs are drawn below it.
        on_cell: called with each finished cell.
        done: ``done(variant, backend, batch_size, seq_len)``: cells already measured are not timed again.
        check_text: held-out task text every runnable must also match eager on before it is timed
            (:func:`~prunebench.backends.fidelity.check_fidelity`); None: the timed inputs only.
        **timing: ``timer`` / ``clock`` / ``meter`` / ``sleep`` of :func:`sweep` (tests inject fakes).

    Returns:
        The cells, by batch size and then in the order of ``prepared``.
    """
    settings = _backend_settings(settings)
    text = None if check_text is None else {k: v.to(settings.device) for k, v in check_text.items()}
    cells = []
    for batch_size in batch_sizes:
        todo = [p for p in prepared if done is None or not done(p.variant, p.backend, batch_size, seq_len)]
        if not todo:
            continue
        batch = make_inputs(vocab_size, batch_size, seq_len, seed=settings.seed, pad_fraction=settings.pad_fraction,
                            device=settings.device)
        cells += _sweep_batch(baseline, todo, batch, settings, on_cell, text, **timing)
    return cells


def backend_sweep(baseline_model: nn.Module, model: nn.Module, backend: str, batch_sizes: Sequence[int], seq_len: int,
                  settings: BenchSettings, *, names: tuple[str, str] = ("baseline", "model"),
                  progress: Callable[[int, int, CellRecord], None] | None = None) -> list[CellRecord]:
    """``model`` on ``backend`` against ``baseline_model`` on eager at each batch size (``prunebench bench``).

    Args:
        baseline_model, model: eval-mode models on ``settings.device`` (they may be the same object).
        backend: the backend's registry name.
        batch_sizes, seq_len, settings: shapes and timing budget.
        names: labels of the baseline and the model in the cells.
        progress: ``progress(done, total, cell)`` after each cell.
    """
    from prunebench.backends import BACKENDS

    options = default_options(settings, batch_sizes, seq_len)
    with pinned_threads(settings.threads):
        base = prepare_variant(BACKENDS.get("eager"), names[0], baseline_model, options)
        cand = prepare_variant(BACKENDS.get(backend), names[1], model, options)
    vocabs = [a.vocab_size for a in map(find_adapter, (baseline_model, model)) if a is not None]
    done: list[CellRecord] = []

    def emit(cell: CellRecord) -> None:
        done.append(cell)
        if progress is not None:
            progress(len(done), len(batch_sizes), cell)

    return bench_backends([cand], base, batch_sizes, seq_len, settings, vocab_size=min(vocabs), on_cell=emit)


def default_options(settings: BenchSettings, batch_sizes: Sequence[int], seq_len: int) -> PrepareOptions:
    """The :class:`PrepareOptions` matching a benchmark's settings and shapes."""
    return PrepareOptions(threads=settings.threads or torch.get_num_threads(),
                          shapes=tuple((b, seq_len) for b in batch_sizes), device=settings.device, seed=settings.seed)
