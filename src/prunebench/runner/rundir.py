"""The run folder: where a run's store, models, log and report live, and the rules for reusing one.

A folder that already holds a run is never silently overwritten: ``resume`` continues it (the stored
config wins and must not conflict with an explicitly given one), ``force`` clears prunebench's own files
in it (and nothing else), and without either the run is refused before any expensive work starts.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prunebench.config import RunConfig
from prunebench.errors import PrunebenchError
from prunebench.results import STORE_FILENAME, ResultStore

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
    return Path("runs") / f"{stamp}-{Path(model).name or 'model'}"  # a model folder: its own name


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
