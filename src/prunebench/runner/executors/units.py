"""The two kinds of unit a run executes, as module-level functions any executor can run (or ship to a worker).

``prepare_unit`` makes one variant (prune, recovery fine-tuning, fidelity check, save with reload check,
evaluate); ``time_unit`` times some cells of one batch size against dense on the node it runs on and stamps
each cell with that node's class and environment fingerprint. Neither writes the results store: they return
records, and the driver commits them. Models travel either as live modules (the local executor) or as the
files of their saved folder (``{file name: bytes}``, the Ray executor): :func:`as_model` accepts both.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.bench import environment, fingerprint_hash, make_inputs, sweep
from prunebench.bench.settings import BenchSettings
from prunebench.models import TransformerEncoder, load_model, save_model
from prunebench.results import CellRecord
from prunebench.runner.stages import DENSE, RECOVERABLE
from prunebench.runner.variants import load_variant, make_variant, prune_spec
from prunebench.tasks import RecoveryCallback, Task, calibration_batches, evaluate

#: A model as a live module or as its saved folder's files.
ModelSource = TransformerEncoder | Mapping[str, bytes]
#: Where a unit hands each result (see :mod:`prunebench.runner.executors.base`).
Emit = Callable[[Any], None]


def folder_files(folder: str | Path) -> dict[str, bytes]:
    """Every file of a saved model folder (flat), to ship it through an object store."""
    root = Path(folder)
    files = {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file() and not p.name.endswith(".tmp")}
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
        if Path(name).name != name:
            raise ValueError(f"a shipped model file must be a plain name, got {name!r}")
        (tmp / name).write_bytes(data)
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return target


def model_files(model: TransformerEncoder) -> dict[str, bytes]:
    """A live model as the files of its saved folder (safetensors + config.json), to ship it."""
    with tempfile.TemporaryDirectory(prefix="prunebench-model-") as tmp:
        save_model(model, Path(tmp) / "m")
        return folder_files(Path(tmp) / "m")


def as_model(source: ModelSource) -> TransformerEncoder:
    """A live model in eval mode from either form of :data:`ModelSource` (files are loaded, never unpickled)."""
    if isinstance(source, nn.Module):
        return source
    with tempfile.TemporaryDirectory(prefix="prunebench-model-") as tmp:
        write_folder(source, Path(tmp) / "m")
        return load_model(Path(tmp) / "m").eval()


def prepare_unit(payload: Mapping[str, Any], emit: Emit, *, task: Task, dense: ModelSource) -> None:
    """Make (or, with ``reuse``, reload) one variant and evaluate it; see the module docstring.

    Payload keys: ``name, method, sparsity, seed, seq_len, vocab, threads, iterative_steps, schedule,
    finetune_steps, train_precision, calib_sequences, eval_kwargs``; ``save_dir`` (the run folder's model
    folder, local executor) or ``ship`` (save to a scratch folder and return its files); ``reuse`` (a model
    source of a variant committed earlier: only evaluate it); ``evaluate`` (whether an evaluation is wanted).

    Emits one ``{"name", "record" (variant record or None), "model" (live, local) or "files" (shipped),
    "evaluation" (record or None), "eval_error", "failed"}``; failures are emitted, never raised.
    """
    p = payload
    torch.set_num_threads(int(p["threads"]))  # the driver's count: same numerics as an in-process run
    dense_model = as_model(dense)
    out: dict[str, Any] = {"name": p["name"], "record": None, "evaluation": None, "eval_error": None,
                           "failed": False, "model": None, "files": None}
    if p.get("reuse") is not None:
        model = as_model(p["reuse"]) if not isinstance(p["reuse"], str) else load_variant(Path(p["reuse"]))
    else:
        spec = prune_spec(p["method"], p["sparsity"], seed=p["seed"], iterative_steps=p["iterative_steps"],
                          schedule=p["schedule"])
        # the spec says what its criterion needs (calibration batches) and whether it is gradual
        calib = calibration_batches(task, p["calib_sequences"], seed=p["seed"]) if spec.needs_calib else None
        on_step = None
        if spec.gradual and p["finetune_steps"]:
            on_step = RecoveryCallback(task, p["finetune_steps"], seed=p["seed"], precision=p["train_precision"])
        check_batch = make_inputs(p["vocab"], 2, p["seq_len"], seed=p["seed"] + 1, pad_fraction=0.25)
        scratch = tempfile.mkdtemp(prefix="prunebench-variant-") if p.get("ship") else None
        save_dir = Path(scratch) / "m" if scratch else (Path(p["save_dir"]) if p.get("save_dir") else None)
        try:
            model, record = make_variant(dense_model, p["name"], spec, seq_len=p["seq_len"], calib=calib,
                                         on_step=on_step, check_batch=check_batch, save_dir=save_dir)
            if scratch:
                out["files"] = folder_files(save_dir)
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
            out["evaluation"] = evaluate(model, task, reference=dense_model, **p["eval_kwargs"]).record(p["name"])
        except RECOVERABLE as exc:
            out["eval_error"] = f"{type(exc).__name__}: {exc}"
    emit(out)


def time_unit(payload: Mapping[str, Any], emit: Emit, *, models: Mapping[str, ModelSource],
              settings: BenchSettings) -> None:
    """Time the cells ``payload["todo"]`` (``(variant, batch size)`` pairs) against dense on this node through
    the one sweep (blocks round-robin over the cells); emits each :class:`~prunebench.results.CellRecord` as
    it is finished, stamped with ``node_class`` and this node's ``environment`` and ``fingerprint_hash``.

    Each variant is paired against this node's own dense model; the ``dense`` row is dense against an
    identical twin (the noise floor here), so cells timed on different hardware are never mixed up.

    Payload keys: ``todo, batch_sizes, seq_len, vocab, seed, pad_fraction, device, threads, node_class``.
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
        return make_inputs(p["vocab"], batch_size, seq_len, seed=p["seed"], pad_fraction=p["pad_fraction"],
                           device=device)

    def on_cell(cell: CellRecord) -> None:
        emit(dataclasses.replace(cell, node_class=p["node_class"], extra={**cell.extra, **stamp}))

    sweep(live, inputs, [int(b) for b in p["batch_sizes"]], (int(p["seq_len"]),), DENSE, settings=settings,
          on_cell=on_cell, skip=lambda name, b, _seq: (name, b) not in todo)
