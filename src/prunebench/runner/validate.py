"""Checks of a run's inputs against this machine, made before its folder or store is created.

:class:`~prunebench.config.RunConfig` checks everything that needs no look at the machine (values, ranges,
forms); this module adds what does: the tasks apply to this kind of model (the task registry says how), their
data files are readable and usable (read and split as the run will read them: columns, classes, splits; a text
file not empty, not binary, large enough to calibrate), a CUDA device exists if asked for, and
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
from prunebench.models.io import check_batch_fits_memory, shape_config
from prunebench.models.presets import preset_config
from prunebench.tasks.classification import read_labelled_texts
from prunebench.tasks.factory import CALIB, SCORE, check_task_use, parse_task, scoring_task
from prunebench.tasks.hf_text import BUILTIN_TASK, builtin_task_path, check_calibration_texts, plain_text_task

#: Task kinds whose spec names a data file (``KIND:PATH``).
FILE_TASKS = ("csv", "jsonl")


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


def check_tasks(task: str, calib_tasks: tuple[str, ...], model_kind: str, calib_sequences: int, *,
                labelled_calibration: bool = False) -> None:
    """Raise unless ``task`` can score a ``model_kind`` model and every ``calib_tasks`` entry can calibrate it,
    reading every file they name as the run will (so a bad file is refused before any folder exists).

    Args:
        task: the scoring task (``mlm`` means the built-in labelled task for a pretrained base or classifier).
        calib_tasks: the ``--calib-task`` mix (empty: the scoring task).
        model_kind: ``preset`` or a pretrained encoder's head kind (:data:`~prunebench.tasks.factory.MODEL_KINDS`).
        calib_sequences: sequences calibration reads; a ``text:PATH`` it calibrates on must hold that many
            training texts.
        labelled_calibration: something reads the calibration batches' labels (a gradient criterion, the search's
            probe loss): a pretrained base or classifier encoder's labels exist only for its scoring task.

    Raises:
        ValueError: an unknown task or one this kind of model cannot use so (one line, naming what to do);
        PrunebenchError: an unusable file (missing, empty, binary, too small to calibrate, bad columns).
    """
    scoring = scoring_task(task, model_kind)
    check_task_use(scoring, model_kind, SCORE)
    calib = tuple(calib_tasks) or (scoring,)
    for spec in calib:
        try:
            check_task_use(spec, model_kind, CALIB)
        except ValueError as exc:
            raise ValueError(f"--calib-task: {exc}") from None
    others = sorted(set(calib) - {scoring})
    if others and model_kind == "preset":
        raise ValueError(f"--calib-task {','.join(others)}: our encoder calibrates on the task it was trained on "
                         f"({scoring}), whose tokenizer it has; a mix of tasks is for pretrained models")
    if others and labelled_calibration and model_kind in ("base", "cls"):
        raise ValueError(f"--calib-task {','.join(others)}: this run reads calibration labels (a gradient criterion "
                         f"or --targets), which only the scoring task {scoring} has for this model; calibrate on it "
                         "alone or use another criterion")
    for spec in dict.fromkeys((scoring, *calib)):  # each file once, in order
        check_task_data(spec, calib_sequences if spec in calib else 0)


def check_task_data(spec: str, calib_sequences: int = 0) -> None:
    """Read the data ``spec`` names as a run will (a user file, the built-in task's package); nothing for ``mlm``.

    Raises:
        PrunebenchError: one line (see :func:`check_tasks`).
    """
    _, path = parse_task(spec)
    key = spec.partition(":")[0]
    if key in FILE_TASKS:
        task_file = check_task_file(spec)
        assert task_file is not None
        read_labelled_texts(task_file, key)  # what the run reads, refused now
    elif key == "text":
        texts = plain_text_task(str(path))
        if calib_sequences:
            check_calibration_texts(texts, calib_sequences)
    elif key == BUILTIN_TASK:
        builtin_task_path()


def check_run_inputs(config: RunConfig) -> None:
    """Everything about ``config`` that depends on this machine; see the module docstring.

    Raises:
        ValueError: an unknown task kind, or one this kind of model cannot use (see :func:`check_tasks`).
        PrunebenchError: an unreadable or unusable task file (DataError: no data rows, a missing column, one
            class, an empty split; a run reads its file with the default ``text`` / ``label`` columns; a text file
            that is empty, binary or too small to calibrate),
            ``device="cuda"`` without a CUDA device, or an HF model folder that cannot be used
            (HFModelError / CheckpointError, one line each), or a backend whose package is missing.
    """
    from prunebench.sources import source_class

    model_kind = source_class(config.model).check(config.model)  # an HF folder's files, and its head kind
    # A batch size that cannot fit is refused now, not when its cell is timed (an HF folder is sized from its
    # model built on the meta device: no weights read).
    if config.is_hf:
        from prunebench.models.hf.loading import hf_skeleton

        shapes = shape_config(hf_skeleton(config.model))
    else:
        shapes = preset_config(config.model)
    largest = max(config.batch_sizes)
    check_batch_fits_memory(shapes, largest, config.seq_len, f"--batch-sizes {largest}", training=False)
    check_tasks(config.task, config.calib_tasks, model_kind, config.calib_sequences,
                labelled_calibration=bool(config.targets))
    if config.device == "cuda" and not torch.cuda.is_available():
        raise PrunebenchError("--device cuda was asked for, but torch sees no CUDA device here")
    check_backend_packages(config.backends)
    check_target_backends(config)


def check_target_backends(config: RunConfig) -> None:
    """Refuse a target named on a backend that cannot run here (``--targets 3@semi-structured`` without a GPU):
    a search needs its backend, where a timed cell records the skip instead.

    Raises:
        PrunebenchError: one line naming the target and why.
    """
    from prunebench.search.backend import check_search_backend

    for target, backend in config.target_specs():
        if backend is not None:
            try:
                check_search_backend(backend)
            except ValueError as exc:
                raise PrunebenchError(f"--targets {target:g}@{backend}: {exc}") from None


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
