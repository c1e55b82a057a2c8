"""Checks on output folders, made before any expensive work: writable, not a file, not inside a run folder.

Every command that writes a folder (``run``, ``prune``, ``train``, ``report --out``) calls these first, so a
bad ``--out`` is a one-line error before training or timing starts, not a traceback at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from prunebench.errors import PrunebenchError
from prunebench.results import STORE_FILENAME

#: The lock file every ``prunebench run`` holds in its folder; with the store it marks a run folder.
RUN_LOCK_FILE = "run.lock"
RUN_MARKERS = (STORE_FILENAME, RUN_LOCK_FILE)
#: Files a saved model folder holds; ``--force`` replaces exactly these.
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "plan.json", "prune_report.json")


class OutDirError(PrunebenchError):
    """An output folder cannot be used as asked."""


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a parent without search permission
        return False


def check_writable_dir(path: str | Path, what: str = "--out") -> Path:
    """Raise unless ``path`` is (or can be created as) a folder this process can write into.

    Nothing is left behind: the probe folder made in the nearest existing ancestor is removed at once.

    Returns:
        ``path`` as a Path.

    Raises:
        OutDirError: ``path`` is an existing file, lies under a file, or its nearest existing folder refuses
            writes (permissions, a read-only or virtual file system such as /proc).
    """
    target = Path(path)
    if _exists(target) and not target.is_dir():
        raise OutDirError(f"{what} {target} is an existing file, not a folder")
    probe = target.absolute()
    while not _exists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutDirError(f"{what} {target} lies under {probe}, which is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".prunebench-probe-", dir=probe))
    except OSError as exc:
        raise OutDirError(f"{what} {target} is not writable: cannot create a folder in {probe} "
                          f"({exc.strerror or exc})") from None
    return target


def find_run_folder(path: str | Path) -> Path | None:
    """The run folder ``path`` is or lies in (a folder holding a run's store or lock), or None."""
    here = Path(path).absolute()
    for folder in (here, *here.parents):
        if any(_exists(folder / marker) for marker in RUN_MARKERS):
            return folder
    return None


def check_model_out(path: str | Path, *, force: bool, what: str = "--out") -> Path:
    """Check a model output folder of ``prune`` / ``train``: writable, empty (unless ``force``), no run folder.

    Raises:
        OutDirError: as :func:`check_writable_dir`; the folder is not empty and ``force`` is False; or it is
            (inside) a run folder, which only ``prunebench run`` writes, whatever ``force`` says.
    """
    target = check_writable_dir(path, what)
    run = find_run_folder(target)
    if run is not None:
        raise OutDirError(f"{what} {target} is inside the run folder {run}; only `prunebench run` writes there "
                          "(choose a folder outside it)")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise OutDirError(f"{what} {target} is not empty; use --force to replace the model in it")
    return target


def clear_model_files(folder: Path, names: tuple[str, ...] = MODEL_FILES) -> None:
    """Remove a saved model's files (or the given ``names``) from ``folder`` (``--force``), so no stale plan or
    tokenizer survives; nothing else of the folder is touched."""
    for name in names:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif _exists(path):
            path.unlink()
