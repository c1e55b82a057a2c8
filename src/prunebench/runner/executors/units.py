"""The two kinds of unit a run executes, as module-level functions any executor can run (or ship to a worker).

``prepare_unit`` makes one variant (prune, recovery fine-tuning, fidelity check, save with reload check,
evaluate); ``time_unit`` times some cells of one batch size against dense on the node it runs on and stamps
each cell with that node's class and environment fingerprint. Neither writes the results store: they return
records, and the driver commits them. Models travel either as live modules (the local executor) or as the
files of their saved folder (``{file name: bytes}``, the Ray executor): :func:`as_model` accepts both.
Which kind of model it is (our encoder, a pretrained HF encoder) only the run's
:class:`~prunebench.sources.ModelSource` knows: units receive it with their shared inputs.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunebench.bench import environment, fingerprint_hash, sweep
from prunebench.bench.settings import BenchSettings
from prunebench.models import load_model, save_model
from prunebench.pruning import METHODS
from prunebench.results import CellRecord
from prunebench.runner.stages import DENSE, RECOVERABLE
from prunebench.runner.variants import load_variant, make_variant, prune_spec
from prunebench.sources import ModelSource
from prunebench.user_files import contained

if TYPE_CHECKING:
    from prunebench.tasks.training import Progress

#: A model as a live module or as its saved folder's files (relative POSIX path -> bytes).
ShippedModel = nn.Module | Mapping[str, bytes]
#: Where a unit hands each result (see :mod:`prunebench.runner.executors.base`).
Emit = Callable[[Any], None]
#: A recovery reports its progress at most once per this share of its budget (20 items for a whole recovery).
RECOVERY_PROGRESS_STEP = 0.05


def recovery_progress(emit: Emit, name: str, every: float = RECOVERY_PROGRESS_STEP) -> Progress:
    """A recovery's progress callback (:data:`prunebench.tasks.training.Progress`) that emits
    ``{"name", "progress", "steps", "loss"}`` items, at most one per ``every`` of the budget, so the driver
    (the prepare units' commit in :mod:`prunebench.runner.pipeline`) moves its bar within the unit through a
    recovery that would otherwise hold it still for a minute."""
    last = -1.0

    def report(fraction: float, steps: int, loss: float) -> None:
        nonlocal last
        if fraction - last >= every:
            last = fraction
            emit({"name": name, "progress": fraction, "steps": steps, "loss": loss})

    return report


def folder_files(folder: str | Path) -> dict[str, bytes]:
    """Every file of a saved model folder (relative POSIX paths: an HF folder has ``1_Pooling/config.json``),
    to ship it through an object store."""
    root = Path(folder)
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
             if p.is_file() and not p.name.endswith(".tmp")}
    if "config.json" not in files:
        raise ValueError(f"{root} is not a saved model folder (no config.json)")
    return files


def write_folder(files: Mapping[str, bytes], folder: str | Path) -> Path:
    """Write a shipped model folder into place atomically (a sibling ``.tmp`` folder renamed), replacing any
    earlier copy, so a killed driver never leaves half a model folder behind."""
    target = Path(folder)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in files.items():
        path = contained(tmp, name)  # a shipped name never climbs out of the folder
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return target


def model_files(model: nn.Module) -> dict[str, bytes]:
    """A live model as the files of its saved folder (safetensors + config.json), to ship it."""
    with tempfile.TemporaryDirectory(prefix="prunebench-model-") as tmp:
        save_model(model, Path(tmp) / "m")
        return folder_files(Path(tmp) / "m")


def as_model(source: ShippedModel) -> nn.Module:
    """A live model in eval mode from either form of :data:`ShippedModel` (files are loaded, never unpickled)."""
    if isinstance(source, nn.Module):
        return source
    with tempfile.TemporaryDirectory(prefix="prunebench-model-") as tmp:
        write_folder(source, Path(tmp) / "m")
        return load_model(Path(tmp) / "m").eval()


def prepare_unit(payload: Mapping[str, Any], emit: Emit, *, source: ModelSource, dense: ShippedModel) -> None:
    """Make (or, with ``reuse``, reload) one variant and evaluate it; see the module docstring.

    Payload keys: ``name, method, sparsity, seed, seq_len, threads, iterative_steps, schedule, calib_sequences,
    refit``; ``save_dir`` (the run folder's model folder, local executor) or ``ship`` (save to a scratch folder
    and return its files); ``reuse`` (a model of a variant committed earlier: only evaluate it); ``evaluate``
    (whether an evaluation is wanted); ``progress`` (emit a one-shot recovery's progress: worth it only where
    items reach the driver at once, the local executor). Calibration, recovery and evaluation come from ``source``.

    Emits one ``{"name", "record" (variant record or None), "model" (live, local) or "files" (shipped),
    "evaluation" (record or None), "eval_error", "failed"}``; failures are emitted, never raised. Before it,
    with ``progress``, the recovery's :func:`recovery_progress` items.
    """
    p = payload
    torch.set_num_threads(int(p["threads"]))  # the driver's count: same numerics as an in-process run
    dense_model = as_model(dense)
    out: dict[str, Any] = {"name": p["name"], "record": None, "evaluation": None, "eval_error": None,
                           "failed": False, "model": None, "files": None}
    if p.get("reuse") is not None:
        model = as_model(p["reuse"]) if not isinstance(p["reuse"], str) else load_variant(Path(p["reuse"]))
    else:
        scratch = tempfile.mkdtemp(prefix="prunebench-variant-") if p.get("ship") else None
        save_dir = Path(scratch) / "m" if scratch else (Path(p["save_dir"]) if p.get("save_dir") else None)
        try:
            spec = prune_spec(p["method"], p["sparsity"], seed=p["seed"], iterative_steps=p["iterative_steps"],
                              schedule=p["schedule"], structured_criterion=source.structured_criterion)
            # the spec says what its criterion needs (calibration batches) and whether it is gradual
            calib = source.calibration(p["calib_sequences"], p["seed"]) if spec.needs_calib else None
            on_step = source.step_recovery(dense_model) if spec.gradual else None
            progress = recovery_progress(emit, p["name"]) if p.get("progress") else None
            shrunk = METHODS.get(spec.method).structured and not spec.gradual
            model, record = make_variant(
                dense_model, p["name"], spec, seq_len=p["seq_len"], calib=calib, on_step=on_step,
                check_batch=source.check_batch(p["seq_len"], p["seed"]), save_dir=save_dir,
                loss_fn=source.loss_fn(dense_model),
                refit_calib=source.refit_batches(p["seed"]) if shrunk and p.get("refit") else None,
                recover=(lambda m: source.recover(m, dense_model, progress=progress)) if shrunk else None)
            if scratch:
                out["files"] = folder_files(save_dir)  # type: ignore[arg-type]
        except RECOVERABLE as exc:
            out["failed"], out["error"] = True, f"{type(exc).__name__}: {exc}"
            emit(out)
            return
        finally:
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        out["record"] = record
    out["model"] = None if p.get("ship") else model
    if p.get("evaluate", True):
        try:
            out["evaluation"] = source.evaluate(model, dense_model).record(p["name"])
        except RECOVERABLE as exc:
            out["eval_error"] = f"{type(exc).__name__}: {exc}"
    emit(out)


def time_unit(payload: Mapping[str, Any], emit: Emit, *, models: Mapping[str, ShippedModel],
              settings: BenchSettings, source: ModelSource) -> None:
    """Time the cells ``payload["todo"]`` (``(variant, batch size)`` pairs) against dense on this node through
    the one sweep (blocks round-robin over the cells); emits each :class:`~prunebench.results.CellRecord` as
    it is finished, stamped with ``node_class`` and this node's ``environment`` and ``fingerprint_hash``.

    Each variant is paired against this node's own dense model; the ``dense`` row is dense against an
    identical twin (the noise floor here), so cells timed on different hardware are never mixed up.

    Payload keys: ``todo, batch_sizes, seq_len, device, threads, node_class``; inputs come from ``source``.
    """
    p = payload
    torch.set_num_threads(int(p["threads"]))
    device = torch.device(p["device"])
    env = environment(p["device"], torch.get_num_threads())
    # The class is a label, not part of the fingerprint: two classes on identical hardware hash alike.
    stamp = {"environment": env, "fingerprint_hash": fingerprint_hash(env)}
    todo = {(str(n), int(b)) for n, b in p["todo"]}
    names = [*dict.fromkeys(n for n, _ in todo if n != DENSE), DENSE]  # the baseline last, as the sweep wants
    live = {name: as_model(models[name]).to(device) for name in names}

    def inputs(batch_size: int, seq_len: int) -> Any:
        return source.timing_inputs(batch_size, seq_len, device)

    def on_cell(cell: CellRecord) -> None:
        emit(dataclasses.replace(cell, node_class=p["node_class"], extra={**cell.extra, **stamp}))

    sweep(live, inputs, [int(b) for b in p["batch_sizes"]], (int(p["seq_len"]),), DENSE, settings=settings,
          on_cell=on_cell, skip=lambda name, b, _seq: (name, b) not in todo)
