"""A run never deletes what it did not write, and a refused command leaves its folder as it found it.

``--force`` clears only a prunebench run's own files; a folder whose files where a run writes are not a run's
is refused, nothing deleted. Every refusal (corrupt, foreign or wrong-version stores, conflicting options, bad
threads, a bad task file, an unreachable Ray cluster) comes before ``run.lock``, ``run.log`` or the folder is
created; ``report`` and ``compare`` open stores read-only; a full disk says so and leaves no empty store.

Each case compares the file tree before and after: every entry's name and kind, every file's size, mtime and
SHA-256, every sub-folder's mtime. The top folder's own mtime is not compared: the writability check creates
and removes a probe folder in it. Tests run as root here, which permission bits do not stop, so read-only and
full file systems are real mounts (a 64 KiB tmpfs, a read-only bind mount) in a private mount namespace
(``unshare``), skipped where that is not allowed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from prunebench.cli.main import main
from prunebench.config import RunConfig
from prunebench.errors import PrunebenchError
from prunebench.locking import LockBusy, exclusive_lock
from prunebench.outdir import RUN_LOCK_FILE, find_run_folder
from prunebench.report import build_report
from prunebench.results import ResultStore
from prunebench.runner.executors.ray_executor import check_address
from prunebench.runner.rundir import RunFolderError, apply_plan, claim, inspect_folder
from tests.test_results_synthetic import fill_store

SRC = str(Path(__file__).parents[1] / "src")
RUN = ["run", "--model", "small", "--quick", "--batch-sizes", "1", "--seq-len", "32"]


def tree(root: Path) -> dict[str, tuple]:
    """Everything under ``root`` (see the module docstring); empty when ``root`` does not exist."""
    if not os.path.lexists(root):
        return {}
    out: dict[str, tuple] = {".": ("dir",)}
    for path in sorted(root.rglob("*")):
        st, rel = path.lstat(), str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", st.st_mtime_ns)
        else:
            out[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def _refused(capsys, argv: list[str], message: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and "Traceback" not in err and message in err, err
    return err


def _our_store(folder: Path, *, measured: bool = True, config: RunConfig | None = None) -> Path:
    """A store of ours holding a run of ``config`` (small by default), with a dense variant if ``measured``."""
    folder.mkdir(parents=True, exist_ok=True)
    with ResultStore(folder / "results.sqlite") as store:
        store.start_run({"run_id": "r1", "config": (config or RunConfig(model="small")).to_dict(),
                         "environment": {}})
        if measured:
            store.put_variant({"name": "dense", "method": "dense", "status": "ok", "params": 10})
        store.set_run_status("failed")
    return folder


def _user_folder(folder: Path) -> Path:
    """A user's folder that holds no run, but files with the names a run writes."""
    (folder / "models" / "mine").mkdir(parents=True)
    (folder / "models" / "mine" / "weights.bin").write_bytes(b"\x01" * 100)
    (folder / "figures").mkdir()
    (folder / "figures" / "plot.png").write_bytes(b"png")
    (folder / "report.html").write_text("<p>my report</p>")
    (folder / "summary.md").write_text("# mine")
    (folder / "notes.txt").write_text("mine too")
    return folder


# -- part 2: --force ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [["--force"], []])
def test_a_user_folder_without_a_run_is_refused_and_nothing_deleted(capsys, tmp_path: Path, force) -> None:
    folder = _user_folder(tmp_path / "mine")
    before = tree(folder)
    _refused(capsys, [*RUN, "--out", str(folder), *force, "--cache-dir", str(tmp_path / "c")], "but no prunebench run")
    assert tree(folder) == before
    assert not (tmp_path / "c").exists()  # refused before the task or the dense model were built


def test_force_keeps_entries_the_stored_run_did_not_write(capsys, tmp_path: Path) -> None:
    run = _our_store(tmp_path / "run")
    (run / "models" / "dense").mkdir(parents=True)
    (run / "models" / "dense" / "model.safetensors").write_bytes(b"ours")
    (run / "report.html").write_text("ours")
    (run / "models" / "my_finetune").mkdir()  # a user's folder beside the run's model folders
    (run / "models" / "my_finetune" / "w.bin").write_bytes(b"theirs")
    before = tree(run)
    _refused(capsys, [*RUN, "--out", str(run), "--force"], "models/my_finetune, which the run stored there did not")
    assert tree(run) == before
    (run / "models" / "my_finetune" / "w.bin").unlink()
    (run / "models" / "my_finetune").rmdir()
    (run / "figures").mkdir()
    (run / "figures" / "holiday.jpg").write_bytes(b"theirs")
    with pytest.raises(RunFolderError, match="figures/holiday.jpg"):
        inspect_folder(run, RunConfig(model="small"), resume=False, force=True)
    (run / "report.html").unlink()
    (run / "report.html").mkdir()  # a name the run writes, but not what it writes there
    before = tree(run)
    with pytest.raises(RunFolderError, match="report.html"):
        inspect_folder(run, RunConfig(model="small"), resume=False, force=True)
    assert tree(run) == before


def test_force_removes_exactly_the_stored_runs_own_files(tmp_path: Path) -> None:
    run = fill_store(tmp_path / "run")
    build_report(run)  # every file a report writes, under the names report.build gives them
    config = RunConfig(model="small", methods=("magnitude", "structured"), sparsities=(0.3,))
    with ResultStore(run / "results.sqlite") as store:  # recorded variants and configured ones both count
        store.update_run({"config": config.to_dict()})
    with ResultStore(run / "results.sqlite", readonly=True) as store:
        recorded = [v["name"] for v in store.variants()]
    # recorded (nm2:4), configured only (magnitude@0.3), half-written through its .tmp name (structured@0.5)
    for name in ("dense", "nm2_4", "magnitude_0.3", "structured_0.5.tmp"):
        (run / "models" / name).mkdir(parents=True)
        (run / "models" / name / "config.json").write_text("{}")
    (run / "figures" / ".speedup.png.abc123_x.tmp").write_bytes(b"half")  # an atomic write cut short
    (run / "run.log").write_text("log")
    (run / "notes.txt").write_text("the user's, beside the run")
    assert "nm2:4" in recorded and "magnitude@0.3" not in recorded
    plan = inspect_folder(run, RunConfig(model="small"), resume=False, force=True)
    apply_plan(plan)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    assert (run / "notes.txt").read_text() == "the user's, beside the run"


def test_a_run_that_measured_nothing_is_replaced_only_if_everything_is_its_own(tmp_path: Path) -> None:
    run = _our_store(tmp_path / "run", measured=False)
    (run / "models").mkdir()
    (run / "models" / "keep.bin").write_bytes(b"theirs")
    before = tree(run)
    with pytest.raises(RunFolderError, match="models/keep.bin"):
        inspect_folder(run, RunConfig(model="small"), resume=False, force=False)
    assert tree(run) == before


# -- part 3: a refusal leaves the folder as it found it ---------------------------------------------------------


def _corrupt(folder: Path) -> None:
    folder.mkdir()
    (folder / "results.sqlite").write_bytes(b"not sqlite at all" * 10)


def _foreign_sqlite(folder: Path) -> None:
    folder.mkdir()
    conn = sqlite3.connect(folder / "results.sqlite")  # rollback journal: opening it for writing turns it to WAL
    with conn:
        conn.execute("CREATE TABLE mine (x)")
        conn.execute("INSERT INTO mine VALUES (1)")
    conn.close()


def _newer(folder: Path) -> None:
    _our_store(folder)
    conn = sqlite3.connect(folder / "results.sqlite")
    with conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.close()


def _empty_store(folder: Path) -> None:
    folder.mkdir()
    (folder / "results.sqlite").write_bytes(b"")


def _plain(folder: Path) -> None:
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")


def _bad_csv(folder: Path) -> None:
    _plain(folder)
    (folder.parent / "bad.csv").write_text("text,label\n")  # a header, no rows


CASES = {
    "corrupt store": (_corrupt, ["--out", "{d}"], "not a readable prunebench results store"),
    "corrupt store, --force": (_corrupt, ["--out", "{d}", "--force"], "not a readable prunebench results store"),
    "corrupt store, --resume": (_corrupt, ["--resume", "{d}"], "not a readable prunebench results store"),
    "foreign sqlite, --force": (_foreign_sqlite, ["--out", "{d}", "--force"], "not a prunebench results store"),
    "foreign sqlite, --resume": (_foreign_sqlite, ["--resume", "{d}"], "not a prunebench results store"),
    "0-byte store": (_empty_store, ["--out", "{d}"], "not a prunebench results store"),
    "newer store, --resume": (_newer, ["--resume", "{d}"], "schema version 99"),
    "newer store, --force": (_newer, ["--out", "{d}", "--force"], "schema version 99"),
    "conflicting options": (_our_store, ["--resume", "{d}", "--seq-len", "64"], "holds a run with different seq_len"),
    "a run there already": (_our_store, ["--out", "{d}"], "already holds"),
    "--resume with --force": (_our_store, ["--out", "{d}", "--resume", "{d}", "--force"], "exclude each other"),
    "--set threads=1e20": (_plain, ["--out", "{d}", "--set", f"threads={10**20}"], "threads must be an integer"),
    "--task csv: bad file": (_bad_csv, ["--out", "{d}", "--task", "csv:{d}/../bad.csv"], "it has no data rows"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_run_leaves_the_folder_as_it_found_it(capsys, tmp_path: Path, case: str) -> None:
    setup, args, message = CASES[case]
    folder = tmp_path / "d"
    setup(folder)
    before = tree(folder)
    argv = [a.format(d=folder) for a in args]
    base = ["run"] if "--resume" in argv and "--out" not in argv else RUN
    _refused(capsys, [*base, *argv, "--cache-dir", str(tmp_path / "c")], message)
    assert tree(folder) == before
    assert not (folder / RUN_LOCK_FILE).exists() and not (folder / "run.log").exists()
    if not (folder / "results.sqlite").exists():
        assert find_run_folder(folder) is None  # so `prune --out` into it is not "inside the run folder"
    assert not (tmp_path / "c").exists()


def test_a_refused_run_creates_no_folder(capsys, tmp_path: Path) -> None:
    out = tmp_path / "new" / "run"
    _refused(capsys, [*RUN, "--out", str(out), "--set", "threads=100000"], "threads must be an integer in [1, 4096]")
    assert not (tmp_path / "new").exists()


def test_a_run_that_fails_before_its_store_exists_removes_what_it_created(tmp_path: Path) -> None:
    # Refused under the lock (the folder changed after the first look) and failed before recording anything
    # (a full disk when the store is created): lock, log and the folder this call created go again.
    plain = tmp_path / "plain"
    _plain(plain)
    before = tree(plain)
    for folder in (plain, tmp_path / "new" / "run"):
        with pytest.raises(OSError, match="No space"):
            with claim(folder, RunConfig(model="small"), resume=False, force=False) as (run_dir, _):
                run_dir.log.write_text("started")
                assert (folder / RUN_LOCK_FILE).exists()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run_dir.store))
    assert tree(plain) == before and not (tmp_path / "new").exists()
    kept = _our_store(tmp_path / "kept")
    with pytest.raises(RuntimeError), claim(kept, RunConfig(model="small"), resume=True, force=False):
        raise RuntimeError("a failure once the store exists")
    assert (kept / RUN_LOCK_FILE).exists()  # the run had started: its folder stays a run folder


def test_the_lock_file_of_a_refused_run_can_go_while_another_process_waits(tmp_path: Path) -> None:
    # A waiter that gets the lock of a removed file must not believe it holds the folder.
    path = tmp_path / "run.lock"
    holds, release = threading.Event(), threading.Event()

    def waiter() -> None:
        with exclusive_lock(path, wait=True):
            holds.set()
            release.wait(30)

    with exclusive_lock(path, wait=False):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.3)  # the waiter blocks on the file we hold
        path.unlink()
    assert holds.wait(30)
    try:
        with pytest.raises(LockBusy), exclusive_lock(path, wait=False):
            pass
    finally:
        release.set()
        thread.join(30)


# -- stores are read read-only ------------------------------------------------------------------------------


@pytest.mark.parametrize("setup", [_empty_store, _foreign_sqlite, _corrupt])
def test_report_never_writes_a_file_it_cannot_read(capsys, tmp_path: Path, setup) -> None:
    folder = tmp_path / "d"
    setup(folder)
    before = tree(folder)
    _refused(capsys, ["report", str(folder)], "results store")
    _refused(capsys, ["compare", str(folder), str(folder.parent), "--out", str(tmp_path / "cmp")], "")
    assert tree(folder) == before


def test_report_and_compare_elsewhere_leave_the_run_folders_untouched(capsys, tmp_path: Path) -> None:
    runs = [fill_store(tmp_path / name) for name in ("a", "b")]
    before = [tree(r) for r in runs]
    assert main(["report", str(runs[0]), "--out", str(tmp_path / "rep")]) == 0
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "cmp")]) == 0
    capsys.readouterr()
    assert [tree(r) for r in runs] == before  # no -wal / -shm left beside the stores either
    assert (tmp_path / "rep" / "report.html").exists() and (tmp_path / "cmp" / "compare.html").exists()


def test_a_full_disk_while_writing_is_an_enospc_error(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.start_run({"run_id": "r"})
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "database or disk is full"
        with pytest.raises(OSError) as info:
            store.put_variant({"name": "big", "status": "ok", "error": "x" * 200_000})
        assert info.value.errno == errno.ENOSPC and str(tmp_path / "results.sqlite") in str(info.value)
        assert not store._conn.in_transaction and store.variants() == []


# -- real mounts in a private namespace ---------------------------------------------------------------------


def _namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_mounts = pytest.mark.skipif(not _namespaces(), reason="no private mount namespaces here (unshare -rm)")


def _in_namespace(script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
           "PB": f"{sys.executable} -m prunebench"}
    return subprocess.run(["unshare", "-rm", "sh", "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          env=env, timeout=240)


@needs_mounts
def test_a_full_disk_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = _in_namespace(f"""
        mount -t tmpfs -o size=64k tmpfs {disk} || exit 99
        $PB {' '.join(RUN)} --out {disk}/run --cache-dir {tmp_path}/cache
        echo "rc=$?"
        find {disk} -mindepth 1
    """)
    out = proc.stdout.splitlines()
    assert "rc=1" in out, proc.stdout + proc.stderr
    assert out[-1] == "rc=1"  # nothing under the mount after it: no folder, lock, log or table-less store
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == [f"prunebench run: error: disk full: no space left to write {disk}/run/results.sqlite"]


@needs_mounts
def test_report_of_a_run_on_a_read_only_mount(tmp_path: Path) -> None:
    run = fill_store(tmp_path / "run")
    before = tree(run)
    proc = _in_namespace(f"""
        mount --bind {run} {run} && mount -o remount,bind,ro {run} || exit 99
        touch {run}/probe 2>/dev/null && echo "writable"
        $PB report {run} --out {tmp_path}/elsewhere > /dev/null
        echo "elsewhere rc=$?"
        $PB report {run}
        echo "in place rc=$?"
    """)
    assert "writable" not in proc.stdout, "the mount is not read-only: this test would prove nothing"
    assert "elsewhere rc=0" in proc.stdout and "in place rc=2" in proc.stdout, proc.stdout + proc.stderr
    assert "write the report elsewhere with --out" in proc.stderr and proc.stderr.count("\n") == 1
    assert (tmp_path / "elsewhere" / "report.html").exists()
    assert tree(run) == before


# -- an unreachable Ray cluster -------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_ray_address_where_nothing_answers_is_refused_in_seconds(capsys, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "run"
    start = time.monotonic()
    _refused(capsys, [*RUN, "--executor", "ray", "--ray-address", f"127.0.0.1:{_closed_port()}", "--out", str(out)],
             "cannot reach the Ray cluster at 127.0.0.1:")
    assert time.monotonic() - start < 30 and not out.exists()


def test_check_address_refused_silent_and_listening() -> None:
    with pytest.raises(PrunebenchError, match="refused"):
        check_address(f"127.0.0.1:{_closed_port()}")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        check_address(f"ray://127.0.0.1:{port}", timeout_s=5)  # listening: fine (and fills a backlog of 0)
        start = time.monotonic()  # a full backlog drops the next SYN: the silence of a blackholed address
        with pytest.raises(PrunebenchError, match="nothing answered within 0.5 s"):
            check_address(f"127.0.0.1:{port}", timeout_s=0.5)
        assert time.monotonic() - start < 5
    with pytest.raises(PrunebenchError, match="outside 1-65535"):
        check_address("127.0.0.1:70000")
    check_address("auto")
    check_address(None)
