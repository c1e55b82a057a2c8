"""Issue #16 item 1: one process per run folder, held by an flock on ``run.lock`` for the whole run.

The lock is tested in-process, against a real holder process (refused with its pid; after ``kill -9`` the
lock is taken over with a message naming the dead holder), and with real ``prunebench run`` processes started
together on one ``--out`` and two ``--resume`` of one folder: exactly one of each pair runs.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prunebench.config import RunConfig
from prunebench.locking import LockBusy, exclusive_lock
from prunebench.outdir import RUN_LOCK_FILE
from prunebench.runner.rundir import RunFolderError, claim

SRC = str(Path(__file__).parents[1] / "src")
QUICK = ["--model", "small", "--quick", "--batch-sizes", "1", "--seq-len", "32", "--threads", "1", "--allow-busy",
         "--train-budget", "20"]


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def _wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _lock_pid(folder: Path) -> int | None:
    raw = (folder / RUN_LOCK_FILE).read_text().strip() if (folder / RUN_LOCK_FILE).exists() else ""
    return int(raw) if raw.isdigit() else None


def test_lock_names_its_holder_and_a_clean_release_clears_the_pid(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with exclusive_lock(path, wait=False) as previous:
        assert previous is None
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(LockBusy) as busy, exclusive_lock(path, wait=False):
            pass
        assert busy.value.holder == os.getpid()
    assert path.read_text() == ""  # released cleanly: the next holder takes over nothing
    with exclusive_lock(path, wait=False) as previous:
        assert previous is None


HOLD = """
import sys, time
from prunebench.locking import exclusive_lock
with exclusive_lock(sys.argv[1], wait=False):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_held_run_folder_is_refused_and_a_killed_holders_lock_taken_over(tmp_path: Path, caplog) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / RUN_LOCK_FILE)], stdout=subprocess.PIPE,
                              text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=f"in use by another prunebench run \\(pid {holder.pid}\\)"):
            with claim(out, RunConfig(model="small"), resume=False, force=False):
                pass
        assert not (out / "results.sqlite").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    caplog.set_level(logging.WARNING, logger="prunebench")
    with claim(out, RunConfig(model="small"), resume=False, force=False) as (run_dir, config):
        assert run_dir.root == out and config.model == "small"
        assert _lock_pid(out) == os.getpid()
    assert f"took over the run folder from pid {holder.pid}, which is no longer running" in caplog.text


def _run_proc(args: list[str], cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "prunebench", "run", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=_env(PRUNEBENCH_CACHE=str(cache)))


def _first_to_exit(procs: list[subprocess.Popen], timeout: float = 120.0) -> subprocess.Popen:
    _wait_for(lambda: any(p.poll() is not None for p in procs), timeout, "one of the runs to exit")
    return next(p for p in procs if p.poll() is not None)


def _has_run_row(store: Path) -> bool:
    if not store.exists():
        return False
    try:
        con = sqlite3.connect(store)
        try:
            return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
        finally:
            con.close()
    except sqlite3.Error:
        return False  # the tables are being created right now


@pytest.mark.slow
def test_two_runs_on_one_out_and_two_resumes_of_one_folder_exactly_one_runs(tmp_path: Path, quick_cache: Path) -> None:
    out, cache = tmp_path / "run", quick_cache
    procs = [_run_proc([*QUICK, "--out", str(out)], cache) for _ in range(2)]
    try:
        loser = _first_to_exit(procs)
        winner = next(p for p in procs if p is not loser)
        err = loser.stderr.read()
        assert loser.returncode == 2, err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"is in use by another prunebench run (pid {winner.pid})" in err
        assert winner.poll() is None and _lock_pid(out) == winner.pid
        _wait_for(lambda: _has_run_row(out / "results.sqlite"), what="the winner's store")
        os.kill(winner.pid, signal.SIGKILL)  # leaves a lock file naming a dead process
        winner.wait(timeout=30)

        resumes = [_run_proc(["--resume", str(out)], cache) for _ in range(2)]
        procs += resumes
        second_loser = _first_to_exit(resumes)
        survivor = next(p for p in resumes if p is not second_loser)
        err = second_loser.stderr.read()
        assert second_loser.returncode == 2, err
        assert f"(pid {survivor.pid})" in err and err.count("\n") == 1
        _wait_for(lambda: _lock_pid(out) == survivor.pid, what="the survivor's lock")
        assert survivor.poll() is None
        os.kill(survivor.pid, signal.SIGKILL)
        survivor.wait(timeout=30)
        assert f"took over the run folder from pid {winner.pid}, which is no longer running" in survivor.stderr.read()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def test_live_holder_reads_a_lock_without_touching_it(tmp_path: Path) -> None:
    from prunebench.locking import live_holder

    lock = tmp_path / "run.lock"
    assert live_holder(lock) is None and not lock.exists()  # missing: nothing created
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.write_text(f"{other.pid}\n")
        before = lock.stat()
        assert live_holder(lock) == other.pid
        assert (lock.stat().st_mtime_ns, lock.read_text()) == (before.st_mtime_ns, f"{other.pid}\n")
    finally:
        other.kill()
        other.wait(timeout=30)
    assert live_holder(lock) is None  # a dead holder's pid
    lock.write_text(f"{os.getpid()}\n")
    assert live_holder(lock) is None  # this process's own lock
    lock.write_text("")
    assert live_holder(lock) is None  # a clean release


def test_the_cheap_look_says_in_use_when_a_run_took_the_folder_between_its_two_looks(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """The CLI's look before any work met a store the winner had created but not yet filled (a CI flake said
    "not a prunebench results store"): when the lock names a live run by then, "in use" is the answer."""
    from prunebench.runner import rundir

    out = tmp_path / "run"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"")  # sqlite has created the file, not yet its tables
    looks = iter([None, os.getppid()])  # free at the first look, held by a live process at the second
    monkeypatch.setattr(rundir, "live_holder", lambda path: next(looks))
    with pytest.raises(RunFolderError, match=f"in use by another prunebench run \\(pid {os.getppid()}\\)"):
        rundir.inspect_unlocked(out, RunConfig(model="small"), resume=False, force=False)
    monkeypatch.setattr(rundir, "live_holder", lambda path: None)  # nobody holds it: the store is the answer
    with pytest.raises(RunFolderError, match="not a prunebench results store"):
        rundir.inspect_unlocked(out, RunConfig(model="small"), resume=False, force=False)
