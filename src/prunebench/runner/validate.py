"""Checks of a run's inputs against this machine, made before its folder or store is created.

:class:`~prunebench.config.RunConfig` checks everything that needs no look at the machine (values, ranges,
forms); this module adds what does: the task's data file is readable and usable (read and split as the run
will read it: columns, classes, splits), a CUDA device exists if asked for, and
a Hugging Face model folder can be used (transformers installed, a supported architecture whose hidden size
the head count divides, safetensors weights, a tokenizer), and every requested backend's package is installed.
A failed check leaves nothing behind, so the corrected command simply runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from prunebench.config import RunConfig
from prunebench.errors import PrunebenchError
from prunebench.tasks.classification import read_labelled_texts
from prunebench.tasks.factory import TASKS

#: Task kinds whose spec names a data file (``KIND:PATH``).
FILE_TASKS = ("csv", "jsonl")


def check_task_spec(spec: str) -> None:
    """Raise unless ``spec`` names a registered task kind in its form (``mlm``, ``csv:PATH``, ...).

    Raises:
        ValueError: listing the valid forms.
    """
    key, sep, path = spec.partition(":")
    kind = TASKS.get(key) if key in TASKS else None
    if kind is None or kind.takes_path != bool(sep and path):
        raise ValueError(f"unknown task {spec!r}; choose from: {', '.join(k.form for _, k in TASKS)}")


def check_task_file(spec: str) -> Path | None:
    """For a file task (``csv:PATH`` / ``jsonl:PATH``), raise unless PATH is a readable file; returns it.

    Other task kinds read no user file here: None.

    Raises:
        PrunebenchError: the file is missing, a folder, or unreadable.
    """
    kind, sep, raw = spec.partition(":")
    if not sep or kind not in FILE_TASKS:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise PrunebenchError(f"task file {path} {what}; give --task {kind}:PATH with an existing file")
    if not os.access(path, os.R_OK):
        raise PrunebenchError(f"task file {path} is not readable")
    return path


def check_run_inputs(config: RunConfig) -> None:
    """Everything about ``config`` that depends on this machine; see the module docstring.

    Raises:
        ValueError: an unknown task kind.
        PrunebenchError: an unreadable or unusable task file (DataError: no data rows, a missing column, one
            class, an empty split; a run reads its file with the default ``text`` / ``label`` columns),
            ``device="cuda"`` without a CUDA device, or an HF model folder that cannot be used
            (HFModelError / CheckpointError, one line each), or a backend whose package is missing.
    """
    from prunebench.sources import source_class

    source_class(config.model).check(config)  # the task forms this kind takes, an HF folder's files
    task_file = check_task_file(config.task)
    if task_file is not None:
        read_labelled_texts(task_file, config.task.partition(":")[0])  # what the run reads, refused now
    if config.device == "cuda" and not torch.cuda.is_available():
        raise PrunebenchError("--device cuda was asked for, but torch sees no CUDA device here")
    check_backend_packages(config.backends)


def check_explicit_options(config: RunConfig, explicit: dict[str, str]) -> None:
    """Refuse options given explicitly (``explicit``: run option name -> how it was written, e.g. ``--refit``)
    that this run cannot honour, so none is silently ignored: an option the model's kind cannot honour
    (:attr:`prunebench.sources.ModelSource.unsupported`), or ``refit`` asked for when no variant loses a head,
    neuron or layer (no one-shot structured method and no search target).

    Raises:
        ValueError: one line naming the option and why.
    """
    from prunebench.pruning.spec import METHODS
    from prunebench.sources import source_class

    source_class(config.model).refuse_unsupported(explicit)
    shrinks = config.targets or any(METHODS.get(m).structured for m in config.methods)
    if "refit" in explicit and config.refit and not shrinks:
        raise ValueError(f"{explicit['refit']} refits output projections that lost heads or neurons; none of the "
                         f"methods ({', '.join(config.methods)}) removes any: add structured or --targets")


def check_backend_packages(names: tuple[str, ...]) -> None:
    """Refuse a requested backend whose package is not installed, naming the extra to install: the run would
    otherwise prune, evaluate and time everything and only then record that backend as skipped. A backend
    missing hardware (a GPU, bf16) stays a recorded skip, as the variants it cannot express do.

    Raises:
        PrunebenchError: one line, e.g. ``onnxruntime is not installed; install it with: pip install -e ".[onnx]"``.
    """
    from prunebench.backends import BACKENDS
    from prunebench.backends.base import names_missing_package

    for name in names:
        reason = BACKENDS.get(name).availability()
        if names_missing_package(reason):
            raise PrunebenchError(f"--backends {name}: {reason}")
