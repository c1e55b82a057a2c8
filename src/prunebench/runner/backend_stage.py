"""The run's backend stage: every variant prepared on every extra backend, evaluated where the numerics change,
and timed against dense eager (one block sweep per backend and batch size over its variants); each cell handed
on as it finishes (the pipeline stores it).

``eager`` cells come from the run's main sweep; this stage adds the others (``--backends``). Storage and
evaluation arrive as callbacks so the stage knows nothing of the store's layout.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from prunebench.backends import BACKENDS
from prunebench.backends.cells import bench_backends, default_options, prepare_variant
from prunebench.backends.fidelity import check_fidelity
from prunebench.bench.settings import BenchSettings
from prunebench.bench.timing import pinned_threads
from prunebench.models.batch import Batch
from prunebench.results.cell import CellRecord

logger = logging.getLogger(__name__)

#: Task sequences a calibrating backend (static int8 scales) sees: NNCF's default subset is 300 samples; on 2
#: cores 64 keep a ``medium`` calibration to seconds.
CALIBRATION_SEQUENCES = 64
#: ``done(variant, backend, batch_size, seq_len) -> bool``: the cell is already stored ok (resume).
Done = Callable[[str, str, int, int], bool]
#: ``evaluate(variant, backend, model, runnable) -> None``: evaluates and stores one (variant, backend).
Evaluate = Callable[[str, str, Any, Any], None]


def run_backend_stage(
    backends: Sequence[str],
    models: dict[str, nn.Module],
    batch_sizes: Sequence[int],
    seq_len: int,
    settings: BenchSettings,
    *,
    vocab_size: int,
    dense: str = "dense",
    done: Done | None = None,
    on_cell: Callable[[CellRecord], None] | None = None,
    evaluate: Evaluate | None = None,
    progress: Callable[[str], None] | None = None,
    calibration: Sequence[Batch] = (),
    check_text: Batch | None = None,
) -> dict[str, str]:
    """Prepare, check, evaluate and time every (variant, backend) for the non-eager ``backends``.

    Args:
        backends: backend names (``eager`` is left to the main sweep).
        models: variant name -> eval-mode model (must hold ``dense``).
        batch_sizes, seq_len, settings: the timed shapes and budget.
        vocab_size: inputs are drawn below it.
        dense: the baseline variant (timed on eager).
        done: cells already measured are skipped.
        on_cell: receives each finished cell (skipped and fidelity-failed cells included).
        evaluate: called once per (variant, backend) whose backend changes the numerics.
        progress: one-line status updates.
        calibration: batches of the run's task text for backends that calibrate (``openvino-int8``).
        check_text: held-out task text each runnable must also match eager on before it is timed.

    Returns:
        ``"variant / backend" -> reason`` of every skip.
    """
    extra = [b for b in backends if b != "eager"]
    skips: dict[str, str] = {}
    if not extra:
        return skips
    options = dataclasses.replace(default_options(settings, batch_sizes, seq_len), calibration=tuple(calibration))
    with pinned_threads(settings.threads):
        base = prepare_variant(BACKENDS.get("eager"), dense, models[dense], options)
    def emit(cell: CellRecord) -> None:
        if progress is not None:
            got = f"{cell.speedup:.2f}x" if cell.ok and cell.speedup else cell.status
            progress(f"{cell.variant} on {cell.backend} b={cell.batch_size}: {got}")
        if on_cell is not None:
            on_cell(cell)

    for name in extra:
        backend = BACKENDS.get(name)
        prepared = []
        for variant, model in models.items():
            if done is not None and all(done(variant, name, b, seq_len) for b in batch_sizes):
                continue
            if progress is not None:
                progress(f"{variant} on {name}: preparing")
            with pinned_threads(settings.threads):
                cand = prepare_variant(backend, variant, model, options)
            if cand.skip:
                skips[f"{variant} / {name}"] = cand.skip
            elif evaluate is not None and backend.changes_numerics and cand.runnable is not None:
                missed = _misses_on_text(cand.runnable, model, check_text, settings.threads)
                if missed:  # its cells will be refused on the same text: minutes of scoring would be thrown away
                    logger.info("%s on %s not evaluated: %s", variant, name, missed)
                else:
                    evaluate(variant, name, model, cand.runnable)
            prepared.append(cand)
        # The variants of one backend are swept together, so drift lands in each of their cells alike.
        bench_backends(prepared, base, batch_sizes, seq_len, settings, vocab_size=vocab_size, on_cell=emit, done=done,
                       check_text=check_text)
    return skips


def _misses_on_text(runnable: Any, model: nn.Module, text: Batch | None, threads: int | None) -> str:
    """Why ``runnable`` misses its eager ``model`` on the held-out task text ("" when it matches, or when there is
    no text): the check every cell of it must pass before it is timed, made once before it is evaluated."""
    if text is None:
        return ""
    device = next(model.parameters()).device
    with pinned_threads(threads):
        got = check_fidelity(runnable, model, {k: v.to(device) for k, v in text.items()})
    return got.message


def store_backend_stage(store: Any, config: Any, settings: BenchSettings, models: dict[str, nn.Module],
                        source: Any, dense: nn.Module, progress: Callable[[str], None] | None = None) -> int:
    """:func:`run_backend_stage` for ``prunebench run``: cells and per-backend accuracy into the run's store.

    Accuracy on a backend that changes the numerics is the source's evaluation on the backend's hidden states
    (against the eager dense model as reference; :meth:`ModelSource.evaluate_backend`), attached to each of
    that pair's cells as ``backend_accuracy`` (and ``backend_evaluation``), so the report's deploy view never
    borrows eager's. Where the source cannot evaluate on a backend, the cell says so
    (``backend_accuracy_note``) instead.

    Returns:
        The number of cells that failed (skips are not failures).
    """
    accuracy: dict[tuple[str, str], dict[str, Any]] = {}
    failed = 0

    def done(variant: str, backend: str, batch_size: int, seq_len: int) -> bool:
        return bool(store.has_cell(variant, batch_size, seq_len, status="ok", backend=backend))

    def evaluate(variant: str, backend: str, model: Any, runnable: Any) -> None:
        try:
            result = source.evaluate_backend(model, runnable, dense)
        except (RuntimeError, ValueError) as exc:
            logger.warning("evaluating %s on %s failed: %s", variant, backend, exc)
            accuracy[variant, backend] = {"backend_accuracy_note": f"evaluation failed: {exc}"}
            return
        if isinstance(result, str):  # the reason this source cannot evaluate on a backend
            accuracy[variant, backend] = {"backend_accuracy_note": result}
            return
        accuracy[variant, backend] = {"backend_accuracy": result.accuracy, "backend_evaluation": result.to_dict()}

    def on_cell(cell: Any) -> None:
        nonlocal failed
        key = (cell.variant, cell.backend)
        extra = {**cell.extra, **accuracy.get(key, {}),
                 "backend_changes_numerics": BACKENDS.get(cell.backend).changes_numerics}
        store.put_cell(_replace_extra(cell, extra))
        if cell.failed:
            failed += 1

    run_backend_stage(config.backends, models, config.batch_sizes, config.seq_len, settings,
                      vocab_size=source.vocab_size, done=done, on_cell=on_cell, evaluate=evaluate,
                      progress=progress, calibration=source.calibration(CALIBRATION_SEQUENCES, config.seed),
                      check_text=source.check_text(config.seed))
    return failed


def _replace_extra(cell: Any, extra: dict[str, Any]) -> Any:
    return dataclasses.replace(cell, extra=extra)
