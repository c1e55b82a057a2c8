"""The run folder: where a run's store, models, log and report live, and the rules for reusing one.

A folder that already holds a run is never silently overwritten: ``resume`` continues it (the stored
config wins and must not conflict with an explicitly given one), ``force`` clears prunebench's own files
in it (and nothing else), and without either the run is refused before any expensive work starts. A store
that holds a run but no variant yet (it failed or was killed before measuring anything) is replaced.

One process at a time: :func:`claim` holds an exclusive lock on ``run.lock`` in the folder for the whole
run, taken before the folder's state is read, so two runs on one ``--out`` (or two ``--resume`` of one
folder) cannot both pass the checks; the second gets a one-line error naming the holder's pid.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prunebench.config import RunConfig
from prunebench.errors import PrunebenchError
from prunebench.locking import LockBusy, exclusive_lock, pid_alive
from prunebench.outdir import RUN_LOCK_FILE, check_writable_dir, find_run_folder
from prunebench.results import STORE_FILENAME, ResultStore

logger = logging.getLogger(__name__)

STORE_FILE = STORE_FILENAME
#: Files and folders a run writes; ``force`` removes exactly these.
RUN_ARTIFACTS = (
    STORE_FILE, STORE_FILE + "-wal", STORE_FILE + "-shm", "run.log", "models", "figures",
    "report.html", "summary.md", "results.json", "results.csv",
)


class RunFolderError(PrunebenchError):
    """The output folder cannot be used for this run as asked."""


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder."""

    root: Path

    @property
    def store(self) -> Path:
        """The SQLite results store."""
        return self.root / STORE_FILE

    @property
    def log(self) -> Path:
        """The detailed debug log of the run."""
        return self.root / "run.log"

    def model_dir(self, variant: str) -> Path:
        """Folder of a saved variant model (names like ``nm2:4`` made filesystem-safe)."""
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in variant)
        return self.root / "models" / safe


def default_out(model: str, now: datetime | None = None) -> Path:
    """``runs/<UTC timestamp>-<model>`` relative to the working directory."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{model}"


def _nothing_measured(store_path: Path) -> bool:
    """True when the store holds no variant: whatever stopped that run, replacing it loses nothing measured."""
    with ResultStore(store_path, create=False) as store:
        return not store.variants()


def stored_config(store_path: Path) -> RunConfig | None:
    """The config recorded in an existing store, or None if the store holds no run yet."""
    with ResultStore(store_path, create=False) as store:
        run = store.get_run()
    if run is None:
        return None
    return RunConfig.from_dict(run["config"])


def prepare(
    out: Path, config: RunConfig, *, resume: bool, force: bool, explicit: frozenset[str] = frozenset()
) -> tuple[RunDir, RunConfig]:
    """Decide how to use ``out`` and return it with the config the run will actually use.

    Args:
        out: the run folder.
        config: the config built from defaults, TOML and the command line.
        resume: continue the run stored in ``out``.
        force: clear prunebench's files in ``out`` and start afresh.
        explicit: option names the user set explicitly; on resume they must agree with the stored run.

    Raises:
        RunFolderError: the folder holds a different run (and neither flag was given), ``resume`` names a
            folder with no run, or explicit options conflict with the run being resumed.
    """
    if resume and force:
        raise RunFolderError("--resume and --force exclude each other: continue the run, or start it afresh")
    run_dir = RunDir(out)
    has_store = run_dir.store.exists()
    if resume:
        if not has_store:
            raise RunFolderError(f"nothing to resume: {out} holds no {STORE_FILE}")
        stored = stored_config(run_dir.store)
        if stored is None:
            raise RunFolderError(f"nothing to resume: the store in {out} holds no run")
        conflicts = sorted(k for k in explicit if getattr(stored, k) != getattr(config, k))
        if conflicts:
            raise RunFolderError(
                f"{out} holds a run with different {', '.join(conflicts)}; drop those options to resume it, "
                "or use --force to start afresh"
            )
        return run_dir, stored
    if has_store and not force and _nothing_measured(run_dir.store):
        logger.warning("%s holds a run that measured nothing (it failed or was stopped early); replacing it", out)
        force = True
    if has_store and not force:
        stored = stored_config(run_dir.store)
        what = "a different run" if stored != config else "a run with this config"
        raise RunFolderError(f"{out} already holds {what}; use --resume to continue it or --force to replace it")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} exists and is not a folder")
    if force:
        for name in RUN_ARTIFACTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return run_dir, config


def check_target(out: Path, *, resume: bool) -> None:
    """The cheap checks on a run folder made before anything is created (no lock, no store).

    Raises:
        RunFolderError: ``resume`` names no folder; ``out`` lies inside another run's folder.
        OutDirError: ``out`` is a file, lies under a file, or cannot be written.
    """
    if resume and not out.is_dir():
        raise RunFolderError(f"nothing to resume: {out} is not a folder")
    check_writable_dir(out, "--resume" if resume else "--out")
    outer = find_run_folder(out.absolute().parent)
    if outer is not None:
        raise RunFolderError(f"{out} lies inside the run folder {outer}; choose a folder outside it")


@contextmanager
def claim(
    out: Path, config: RunConfig, *, resume: bool, force: bool, explicit: frozenset[str] = frozenset()
) -> Iterator[tuple[RunDir, RunConfig]]:
    """Lock ``out`` for this process, then :func:`prepare` it; the lock is held until the block ends.

    Yields:
        The run folder and the config the run will use (the stored one on resume).

    Raises:
        RunFolderError: another process holds the folder (the message names its pid), or as :func:`prepare`.
    """
    check_target(out, resume=resume)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the run folder {out}: {exc.strerror or exc}") from None
    with ExitStack() as stack:
        try:
            previous = stack.enter_context(exclusive_lock(out / RUN_LOCK_FILE, wait=False))
        except LockBusy as busy:
            who = f"pid {busy.holder}" if busy.holder else "another process"
            raise RunFolderError(f"{out} is in use by another prunebench run ({who}); wait for it to finish "
                                 "or stop it, then --resume") from None
        if previous is not None:
            gone = "" if pid_alive(previous) else ", which is no longer running"
            logger.warning("%s: took over the run folder from pid %d%s", out, previous, gone)
        yield prepare(out, config, resume=resume, force=force, explicit=explicit)
