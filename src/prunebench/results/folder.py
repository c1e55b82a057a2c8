"""Finding and reading the store of a run folder (read-only, never creating one): what ``report`` and ``compare``
use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunebench.errors import PrunebenchError
from prunebench.results.schema import STORE_FILENAME
from prunebench.results.store import ResultStore


def store_path(run_dir: str | Path) -> Path:
    """Where a run folder keeps its store."""
    return Path(run_dir) / STORE_FILENAME


def open_run(run_dir: str | Path) -> ResultStore:
    """Open the store of an existing run folder read-only (never creates, changes or adds a file).

    Raises:
        PrunebenchError: ``run_dir`` is not a folder, or holds no (readable) results store.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise PrunebenchError(f"{folder} is not a run folder (no such directory)")
    if not store_path(folder).is_file():
        raise PrunebenchError(f"{folder} is not a run folder (no {STORE_FILENAME} in it)")
    return ResultStore(store_path(folder), readonly=True)


def load_snapshot(run_dir: str | Path) -> dict[str, Any]:
    """Everything stored for the run in ``run_dir`` as plain data (see :meth:`ResultStore.snapshot`)."""
    with open_run(run_dir) as store:
        snap = store.snapshot()
    if snap["run"] is None:
        raise PrunebenchError(f"{Path(run_dir)} holds a results store but no run record")
    return snap
