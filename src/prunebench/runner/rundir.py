"""The run folder: where a run's store, models, log and report live, and the rules for reusing one.

A folder that already holds a run is never silently overwritten: ``resume`` continues it (the stored
config wins and must not conflict with an explicitly given one), ``force`` clears that run's own files (its
store, log and report, the model folders of the variants it stores or was configured for) and nothing else,
and without either the run is refused before any expensive work starts. A store that holds a run but no
variant yet (it failed or was killed before measuring anything) is replaced. A folder whose files where a run
writes are not a prunebench run's (no readable store of ours, or entries in ``models/`` the stored run did not
write) is refused, ``--force`` or not: a run never removes or overwrites a file it did not write.

Every refusal comes before anything is created (:func:`inspect_folder` reads the folder and its store
read-only), so a refused command leaves the folder exactly as it found it: no ``run.lock``, no ``run.log``.

One process at a time: :func:`claim` holds an exclusive lock on ``run.lock`` in the folder for the whole
run, and inspects the folder again once it holds it, so two runs on one ``--out`` (or two ``--resume`` of one
folder) cannot both pass the checks; the second gets a one-line error naming the holder's pid.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prunebench.config import RunConfig
from prunebench.errors import PrunebenchError
from prunebench.locking import LockBusy, exclusive_lock, live_holder, pid_alive
from prunebench.outdir import RUN_LOCK_FILE, check_writable_dir, find_run_folder
from prunebench.results import STORE_FILENAME, ResultStore

logger = logging.getLogger(__name__)

STORE_FILE = STORE_FILENAME
LOG_FILE = "run.log"
MODELS_DIR = "models"
#: ``report.build.FIGURE_DIR``, named here too: that module loads matplotlib.
FIGURE_DIR = "figures"
#: Files and folders a run writes at the top of its folder (the report's names: ``report.build``).
RUN_ARTIFACTS = (
    STORE_FILE, STORE_FILE + "-wal", STORE_FILE + "-shm", LOG_FILE, MODELS_DIR, FIGURE_DIR,
    "report.html", "summary.md", "results.json", "results.csv",
)
#: Of those, the ones a new run may find without a store and keep: it appends to the log.
_KEPT_WITHOUT_STORE = (LOG_FILE,)


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
        return self.root / LOG_FILE

    def model_dir(self, variant: str) -> Path:
        """Folder of a saved variant model (names like ``nm2:4`` made filesystem-safe)."""
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in variant)
        return self.root / MODELS_DIR / safe


@dataclass(frozen=True)
class FolderPlan:
    """What a run will do with its folder, decided by :func:`inspect_folder` without changing anything.

    Attributes:
        run_dir: the folder.
        config: the config the run will use (the stored one on resume).
        clear: the previous run's own files and folders, removed before this run starts (``--force``, or a
            stored run that measured nothing); nothing else in the folder is ever removed.
        note: a warning for the log when the folder's run is replaced without ``--force``.
    """

    run_dir: RunDir
    config: RunConfig
    clear: tuple[Path, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class _StoredRun:
    """What a readable store of ours says about the run in it."""

    config: RunConfig | None  # None: no run record yet (or one this version cannot read back)
    variants: tuple[str, ...]  # recorded variant names


def default_out(model: str, now: datetime | None = None) -> Path:
    """``runs/<UTC timestamp>-<model>`` relative to the working directory."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{Path(model).name or 'model'}"  # a model folder: its own name


def _exists(path: Path) -> bool:
    """Whether anything (a dangling link included) has this name."""
    return os.path.lexists(path)


def _plain_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _read_store(out: Path, *, resume: bool) -> _StoredRun | None:
    """The run stored in ``out`` (read-only), None when there is no store; anything else is a refusal."""
    store = RunDir(out).store
    if not _exists(store):
        return None
    why = ("there is no run to resume" if resume else
           "a run never replaces a file it cannot tell is its own: move it away or choose another --out")
    if not _plain_file(store):
        raise RunFolderError(f"{store} is not a file; {why} (nothing was changed)")
    try:
        with ResultStore(store, readonly=True) as opened:
            run = opened.get_run()
            variants = tuple(v["name"] for v in opened.variants())
    except PrunebenchError as exc:
        raise RunFolderError(f"{exc}; {why} (nothing was changed)") from None
    config = None
    if run is not None:
        try:
            config = RunConfig.from_dict(run["config"])
        except ValueError:
            if resume:
                raise
    return _StoredRun(config, variants)


def _figure_names() -> frozenset[str]:
    """The files a report writes into its figure folder (imported here only when that folder exists: the
    report's modules load matplotlib)."""
    from prunebench.report.plots import FIGURES

    return frozenset(f"{name}.{ext}" for name in FIGURES for ext in ("png", "svg"))


def _written_by_run(name: str, own: frozenset[str]) -> bool:
    """Whether an entry named ``name`` is one of ``own`` or a temporary name a run writes one through
    (``NAME.tmp`` for a model folder, ``.NAME.XXXXXXXX.tmp`` for a file written atomically)."""
    if name in own:
        return True
    if not name.endswith(".tmp"):
        return False
    if name.removesuffix(".tmp") in own:
        return True
    return name.startswith(".") and name[1:].removesuffix(".tmp").rsplit(".", 1)[0] in own


def _split_owned(folder: Path, own: frozenset[str]) -> tuple[list[Path], list[Path]]:
    """The entries of ``folder`` a run wrote (by name, never a link) and the others."""
    mine, theirs = [], []
    for entry in sorted(folder.iterdir()):
        (mine if _written_by_run(entry.name, own) and not entry.is_symlink() else theirs).append(entry)
    return mine, theirs


def _run_files(out: Path, stored: _StoredRun) -> tuple[list[Path], list[Path]]:
    """The stored run's own files and folders in ``out`` (what clearing it removes), and the entries of ``out``
    where a run writes (its top-level names, ``models/``, the figure folder) that it did not write."""
    from prunebench.runner.stages import DENSE  # stages imports this module

    run_dir = RunDir(out)
    names = {DENSE, *stored.variants, *(n for n, _, _ in (stored.config.variants() if stored.config else ()))}
    own, foreign = [], []
    for name in RUN_ARTIFACTS:
        path = out / name
        if not _exists(path):
            continue
        if name == MODELS_DIR:
            expected = frozenset(run_dir.model_dir(n).name for n in names)
            mine, theirs = _split_owned(path, expected) if _plain_dir(path) else ([], [path])
        elif name == FIGURE_DIR:
            mine, theirs = _split_owned(path, _figure_names()) if _plain_dir(path) else ([], [path])
        else:
            mine, theirs = ([path], []) if _plain_file(path) else ([], [path])
        own += mine
        foreign += theirs
    return own, foreign


def _shown(paths: list[Path], out: Path) -> str:
    """A few paths relative to ``out``, for a one-line message."""
    names = [str(p.relative_to(out)) for p in paths[:3]]
    return ", ".join(names) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def inspect_folder(
    out: Path, config: RunConfig, *, resume: bool, force: bool, explicit: frozenset[str] = frozenset()
) -> FolderPlan:
    """Decide how a run uses ``out``, reading the folder (its store read-only) and changing nothing.

    Every refusal of a folder happens here, so a refused command leaves the folder as it found it.

    Args:
        out: the run folder (it need not exist).
        config: the config built from defaults, TOML and the command line.
        resume: continue the run stored in ``out``.
        force: clear the run stored in ``out`` (its own files only) and start afresh.
        explicit: option names the user set explicitly; on resume they must agree with the stored run.

    Raises:
        RunFolderError: both flags; ``out`` is a file; its store is not a readable prunebench store of this
            version; the folder holds a different run (and neither flag was given); ``resume`` names a folder
            with no run, or explicit options conflict with the run being resumed; the folder holds files where
            a run writes that no run stored there wrote (``--force`` never removes them, and a new run would
            overwrite them).
        ValueError: on resume, a stored config this version cannot read.
    """
    if resume and force:
        raise RunFolderError("--resume and --force exclude each other: continue the run, or start it afresh")
    run_dir = RunDir(out)
    if _exists(out) and not out.is_dir():
        raise RunFolderError(f"{out} exists and is not a folder")
    stored = _read_store(out, resume=resume) if out.is_dir() else None
    if resume:
        if stored is None:
            raise RunFolderError(f"nothing to resume: {out} holds no {STORE_FILE}")
        if stored.config is None:
            raise RunFolderError(f"nothing to resume: the store in {out} holds no run")
        conflicts = sorted(k for k in explicit if getattr(stored.config, k) != getattr(config, k))
        if conflicts:
            raise RunFolderError(
                f"{out} holds a run with different {', '.join(conflicts)}; drop those options to resume it, "
                "or use --force to start afresh"
            )
        return FolderPlan(run_dir, stored.config)
    if stored is None:
        taken = [out / n for n in RUN_ARTIFACTS if n not in _KEPT_WITHOUT_STORE and _exists(out / n)]
        if taken:
            what = "--force clears only a prunebench run's own files" if force else "a run would overwrite them"
            raise RunFolderError(f"{out} holds {_shown(taken, out)} but no prunebench run; {what}: choose another "
                                 "--out or move them away (nothing was changed)")
        return FolderPlan(run_dir, config)
    note = ""
    if not force and not stored.variants:
        note = f"{out} holds a run that measured nothing (it failed or was stopped early); replacing it"
    elif not force:
        what = "a different run" if stored.config != config else "a run with this config"
        raise RunFolderError(f"{out} already holds {what}; use --resume to continue it or --force to replace it")
    own, foreign = _run_files(out, stored)
    if foreign:
        raise RunFolderError(f"{out} holds {_shown(foreign, out)}, which the run stored there did not write; "
                             "replacing that run removes only its own files: move them away or choose another "
                             "--out (nothing was changed)")
    return FolderPlan(run_dir, config, tuple(own), note)


def apply_plan(plan: FolderPlan) -> None:
    """Clear what ``plan`` says (the previous run's own files only) and create the folder."""
    out = plan.run_dir.root
    if plan.note:
        logger.warning("%s", plan.note)
    if plan.clear:
        logger.info("%s: removing %d file(s) and folder(s) of the run stored there", out, len(plan.clear))
    for path in plan.clear:
        if _plain_dir(path):
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for name in (MODELS_DIR, FIGURE_DIR):
        folder = out / name
        if _plain_dir(folder) and not any(folder.iterdir()):
            folder.rmdir()  # emptied above (only the run's own entries were in it)
    out.mkdir(parents=True, exist_ok=True)


def prepare(
    out: Path, config: RunConfig, *, resume: bool, force: bool, explicit: frozenset[str] = frozenset()
) -> tuple[RunDir, RunConfig]:
    """:func:`inspect_folder`, then :func:`apply_plan`: the folder ready for the run, and the config it uses.

    Raises:
        RunFolderError: as :func:`inspect_folder` (then nothing was changed).
    """
    plan = inspect_folder(out, config, resume=resume, force=force, explicit=explicit)
    apply_plan(plan)
    return plan.run_dir, plan.config


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


def _missing_folders(out: Path) -> list[Path]:
    """``out`` and those of its parents that do not exist yet, deepest first (what ``mkdir -p`` creates)."""
    missing, path = [], out.absolute()
    while not _exists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def inspect_unlocked(
    out: Path, config: RunConfig, *, resume: bool, force: bool, explicit: frozenset[str] = frozenset()
) -> FolderPlan:
    """:func:`inspect_folder` without holding the lock (the cheap look before any work), which says "in use"
    when another run holds the folder, not what its half-made store looks like.

    Raises:
        RunFolderError: another live process holds the folder, or as :func:`inspect_folder`.
    """
    _refuse_live_holder(out)
    try:
        return inspect_folder(out, config, resume=resume, force=force, explicit=explicit)
    except RunFolderError:
        # Another run may have taken the folder between the look at its lock and this look at its files (two
        # runs started together on 2 busy cores: it had created its store but not yet its tables): then "in
        # use" is the truth, not "not a prunebench results store".
        _refuse_live_holder(out)
        raise


@contextmanager
def claim(
    out: Path, config: RunConfig, *, resume: bool, force: bool, explicit: frozenset[str] = frozenset()
) -> Iterator[tuple[RunDir, RunConfig]]:
    """Lock ``out`` for this process, then prepare it; the lock is held until the block ends.

    The folder is inspected first (:func:`inspect_folder`), so a refused run creates nothing; then created,
    locked and inspected again under the lock (another process may have changed it meanwhile), and only then
    changed. A run that ends before it created its store (refused under the lock, or failed or interrupted
    before it began: a full disk) removes what this call created (``run.lock``, ``run.log``, the folder), so
    a plain folder is never left marked as a run folder.

    Yields:
        The run folder and the config the run will use (the stored one on resume).

    Raises:
        RunFolderError: another process holds the folder (the message names its pid), or as
            :func:`inspect_folder`.
    """
    check_target(out, resume=resume)
    inspect_unlocked(out, config, resume=resume, force=force, explicit=explicit)
    made = _missing_folders(out)
    lock, log = out / RUN_LOCK_FILE, RunDir(out).log
    new_lock, new_log = not _exists(lock), not _exists(log)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the run folder {out}: {exc.strerror or exc}") from None

    def undo() -> None:
        """Remove what this call created; called holding the lock (see :func:`exclusive_lock`)."""
        if new_log:
            log.unlink(missing_ok=True)
        if new_lock:
            lock.unlink(missing_ok=True)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty: someone else is using it now
                break

    with ExitStack() as stack:
        try:
            previous = stack.enter_context(exclusive_lock(lock, wait=False))
        except LockBusy as busy:
            raise _in_use(out, busy.holder) from None
        if previous is not None:
            gone = "" if pid_alive(previous) else ", which is no longer running"
            logger.warning("%s: took over the run folder from pid %d%s", out, previous, gone)
        try:
            plan = inspect_folder(out, config, resume=resume, force=force, explicit=explicit)
        except BaseException:
            undo()
            raise
        apply_plan(plan)
        try:
            yield plan.run_dir, plan.config
        except BaseException:
            if not _exists(plan.run_dir.store):  # nothing was recorded: as if this run never started
                undo()
            raise


def _in_use(out: Path, holder: int | None) -> RunFolderError:
    who = f"pid {holder}" if holder else "another process"
    return RunFolderError(f"{out} is in use by another prunebench run ({who}); wait for it to finish or stop it, "
                          "then --resume")


def _refuse_live_holder(out: Path) -> None:
    """Refuse a folder whose run lock names a live process, before looking at its files (a second run started
    beside a running one was told "already holds a run; use --resume", which would then meet the lock)."""
    holder = live_holder(out / RUN_LOCK_FILE)
    if holder is not None:
        raise _in_use(out, holder)
