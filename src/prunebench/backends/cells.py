"""Benchmark cells over (variant, backend): each runnable checked against its eager model, then timed paired.

A cell is a :class:`~prunebench.results.cell.CellRecord` keyed (variant, backend, batch size, sequence length);
its ``extra`` records the baseline's backend, the fidelity check that preceded the timing, how threads and
memory were controlled, and the backend's environment. A runnable that fails its fidelity check is never timed
(status ``error``, ``backend_status`` ``fidelity``, a message that starts with ``fidelity:``); a backend that
cannot express a variant, or is not installed, is a skip: status ``skipped`` with its reason in ``error``
(a skip is not a failure: it fails no run).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunebench.backends.base import BackendUnavailable, FidelityError, PrepareOptions, Runnable
from prunebench.backends.fidelity import time_runnables
from prunebench.bench.flops import forward_macs
from prunebench.bench.inputs import make_inputs
from prunebench.bench.load import LoadProbe
from prunebench.bench.memory import peak_forward_memory
from prunebench.bench.settings import BenchSettings
from prunebench.bench.timing import pinned_threads, timer_for
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


def _failed(common: dict[str, Any], extra: dict[str, Any], status: str, message: str) -> CellRecord:
    """A cell that was not timed: a skip (status ``skipped``, the reason as its message), or a failure (oom,
    error, or a failed fidelity check stored as ``error`` whose message starts with ``fidelity:``);
    ``backend_status`` keeps the kind itself."""
    if status == SKIPPED:
        store_status, error = SKIPPED, message
    else:
        store_status, error = (status if status in ("oom", "error") else "error"), f"{status}: {message}"
    return CellRecord(status=store_status, error=error,
                      extra={**extra, "backend_status": status, "backend_message": message}, **common)


def backend_cell(base: Prepared, cand: Prepared, batch: Batch, settings: BenchSettings) -> CellRecord:
    """Time ``cand`` against ``base`` on ``batch`` after both passed their fidelity checks (one cell).

    Failures never raise: a skip, a failed fidelity check, or a runtime error become the cell's status.
    """
    batch_size, seq_len = (int(n) for n in batch["input_ids"].shape)
    macs, effective = _macs(cand.reference, batch_size, seq_len)
    baseline_macs, _ = _macs(base.reference, batch_size, seq_len)
    common: dict[str, Any] = {
        "variant": cand.variant, "backend": cand.backend, "baseline": base.variant, "batch_size": batch_size,
        "seq_len": seq_len, "device": settings.device, "threads": settings.threads, "include_head": False,
        "pad_fraction": settings.pad_fraction, "macs": macs, "effective_macs": effective,
        "baseline_macs": baseline_macs, "flop_ideal_speedup": flop_ideal(baseline_macs, effective),
    }
    extra = _fields(base, cand)
    if cand.runnable is None or base.runnable is None:
        return _failed(common, extra, SKIPPED, cand.skip or base.skip)
    probe = LoadProbe()
    with pinned_threads(settings.threads):
        try:
            probe.start()
            result, _, fid = time_runnables((base.runnable, base.reference), (cand.runnable, cand.reference), batch,
                                            timer=_timer(settings), **settings.compare_kwargs())
            probe.stop()
            peak = runnable_peak_memory(cand.runnable, batch, settings.device) if settings.measure_memory else None
        except FidelityError as exc:
            logger.warning("cell %s/%s b=%d not timed: %s", cand.variant, cand.backend, batch_size, exc)
            return _failed(common, extra, FIDELITY, str(exc))
        except (RuntimeError, ValueError) as exc:
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            status = "oom" if "out of memory" in text.lower() else "error"
            return _failed(common, extra, status, f"{type(exc).__name__}: {text}")
    lat = result.candidate
    extra.update(fidelity=fid.to_dict(), backend_status="ok")
    tput = {}
    if lat.median > 0:
        tput = {"throughput_samples_s": batch_size / lat.median,
                "throughput_tokens_s": batch_size * seq_len / lat.median}
    return CellRecord(
        latency_ms=lat.median * 1e3, latency_p90_ms=lat.p90 * 1e3, latency_cv=lat.cv,
        baseline_latency_ms=result.baseline.median * 1e3, speedup=result.speedup, speedup_ci_low=result.ci_low,
        speedup_ci_high=result.ci_high, n_pairs=result.n_pairs, n_blocks=len(result.block_sizes),
        stop_reason=result.stop_reason, peak_memory_bytes=peak, timing=result.to_dict(), extra=extra,
        **{**common, "threads": lat.threads}, **tput, **probe.finish(),
    )


def _timer(settings: BenchSettings) -> Callable[..., Any]:
    from prunebench.bench.timing import time_paired

    timer = timer_for(settings.device)

    def paired(a: Callable[[], Any], b: Callable[[], Any], **kwargs: Any) -> Any:
        return time_paired(a, b, timer=timer, **kwargs)

    return paired


def bench_backends(
    prepared: Sequence[Prepared],
    baseline: Prepared,
    batch_sizes: Sequence[int],
    seq_len: int,
    settings: BenchSettings,
    *,
    vocab_size: int,
    on_cell: Callable[[CellRecord], None] | None = None,
) -> list[CellRecord]:
    """Every prepared (variant, backend) against ``baseline`` (dense eager) at each batch size.

    Args:
        prepared: the (variant, backend) runnables (skips included: they become skipped cells).
        baseline: dense on eager, what every speedup is relative to.
        batch_sizes, seq_len: the timed shapes.
        settings: the timing budget and conditions.
        vocab_size: inputs are drawn below it.
        on_cell: called with each finished cell.
    """
    cells = []
    for batch_size in batch_sizes:
        batch = make_inputs(vocab_size, batch_size, seq_len, seed=settings.seed, pad_fraction=settings.pad_fraction,
                            device=settings.device)
        for cand in prepared:
            cell = backend_cell(baseline, cand, batch, settings)
            cells.append(cell)
            if on_cell is not None:
                on_cell(cell)
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
