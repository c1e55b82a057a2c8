"""End to end: `prunebench run --model small --quick` in a temp folder, a kill -9 mid-run and a resume,
a byte-stable report rebuild, and bad input rejected before any work starts.

The runs share one cache folder, so the tokenizer and the dense baseline are built once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.store_probe import kill_when, rows

pytestmark = pytest.mark.slow

# --allow-busy: a busy shared machine must not leave these cells unmeasured (test_contention.py tests that).
QUICK = ["--model", "small", "--quick", "--batch-sizes", "1,2", "--seq-len", "32", "--threads", "1", "--allow-busy",
         "--train-budget", "20"]


def _run(args: list[str], cache: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRUNEBENCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "prunebench", "run", *args], capture_output=True, text=True,
                          env=env, check=False, timeout=900, **kwargs)


@pytest.fixture(scope="module")
def cache(quick_cache) -> Path:
    return quick_cache


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache) -> Path:
    out = tmp_path_factory.mktemp("runs") / "quick"
    proc = _run([*QUICK, "--out", str(out)], cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_run_fills_the_store_exports_and_report(finished_run):
    store = finished_run / "results.sqlite"
    names = {r[0] for r in rows(store, "SELECT name FROM variants WHERE status='ok'")}
    assert names == {"dense", "magnitude@0.5", "structured@0.5", "iterative@0.8", "wanda@0.5", "nm2:4"}
    # every variant passed its fidelity check and reloads bit-exactly from its saved folder
    for name, fidelity in rows(store, "SELECT name, fidelity FROM variants"):
        assert json.loads(fidelity)["ok"], (name, fidelity)
    # measured sparsity is measured, and matches the request for the unstructured methods
    sparsity = dict(rows(store, "SELECT name, measured_sparsity FROM variants"))
    assert sparsity["magnitude@0.5"] == pytest.approx(0.5, abs=0.01)
    assert sparsity["nm2:4"] == pytest.approx(0.5, abs=0.01)
    assert sparsity["iterative@0.8"] == pytest.approx(0.8, abs=0.01)
    assert {r[0] for r in rows(store, "SELECT variant FROM evaluations")} == names
    cells = rows(store, "SELECT variant, batch_size, status, speedup, speedup_ci_low, speedup_ci_high FROM cells")
    assert len(cells) == 6 * 2
    for variant, _, status, speedup, low, high in cells:
        assert status == "ok" and low <= speedup <= high, variant
    (run_status,) = rows(store, "SELECT status FROM runs")[0]
    assert run_status == "finished"
    for name in ("report.html", "summary.md", "results.json", "results.csv", "run.log"):
        assert (finished_run / name).stat().st_size > 0, name
    csv_lines = (finished_run / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 6 * 2  # header + one row per variant x batch size
    structured = finished_run / "models" / "structured_0.5"
    assert (structured / "plan.json").exists() and (structured / "prune_report.json").exists()
    assert "DEBUG" in (finished_run / "run.log").read_text()


def test_report_rebuild_is_byte_stable(finished_run):
    html = (finished_run / "report.html").read_bytes()
    summary = (finished_run / "summary.md").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "prunebench", "report", str(finished_run)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (finished_run / "report.html").read_bytes() == html
    assert (finished_run / "summary.md").read_bytes() == summary


def test_bench_and_run_give_the_same_flop_ideal_for_the_same_pair(finished_run, tmp_path):
    from prunebench.cli.main import main

    stored = dict(rows(finished_run / "results.sqlite",
                        "SELECT variant, flop_ideal_speedup FROM cells WHERE batch_size=1"))
    for variant, folder in (("magnitude@0.5", "magnitude_0.5"), ("structured@0.5", "structured_0.5")):
        out = tmp_path / f"{folder}.json"
        models = finished_run / "models"
        code = main(["bench", str(models / folder), "--baseline", str(models / "dense"),
                     "--batch-sizes", "1", "--seq-len", "32", "--threads", "1", "--budget", "quick", "--min-time", "0",
                     "--max-time", "0.2", "--no-memory", "--json", str(out)])
        assert code == 0
        (cell,) = [c for c in json.loads(out.read_text())["cells"] if c["variant"] == folder]
        assert cell["flop_ideal_speedup"] == pytest.approx(stored[variant], rel=1e-12), variant
    assert stored["magnitude@0.5"] > 1.5  # zeros: the non-zero MACs, not 1.00x


def test_existing_run_folder_is_refused_without_resume_or_force(finished_run, cache):
    before = (finished_run / "results.sqlite").stat().st_mtime_ns
    proc = _run([*QUICK, "--out", str(finished_run)], cache)
    assert proc.returncode == 2
    assert "already holds" in proc.stderr and "--resume" in proc.stderr and proc.stderr.count("\n") == 1
    assert (finished_run / "results.sqlite").stat().st_mtime_ns == before
    conflict = _run(["--resume", str(finished_run), "--seq-len", "64"], cache)
    assert conflict.returncode == 2 and "different seq_len" in conflict.stderr


def test_kill_9_mid_run_then_resume_finishes_only_what_is_missing(tmp_path, cache, finished_run):
    out = tmp_path / "killed"
    env = {**os.environ, "PRUNEBENCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-m", "prunebench", "run", *QUICK, "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    store = out / "results.sqlite"
    kill_when(child, store, "SELECT COUNT(*) FROM cells", 2, timeout=600, poll=0.2)
    assert rows(store, "PRAGMA integrity_check")[0][0] == "ok"
    before = {r[0:2]: r[2] for r in rows(store, "SELECT variant, batch_size, timing FROM cells")}
    assert len(before) >= 2
    assert rows(store, "SELECT status FROM runs")[0][0] == "running"

    proc = _run(["--resume", str(out)], cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = {r[0:2]: r[2] for r in rows(store, "SELECT variant, batch_size, timing FROM cells")}
    assert len(after) == 12
    for key, raw in before.items():
        assert after[key] == raw, f"cell {key} was measured again instead of kept"
    assert rows(store, "SELECT status FROM runs")[0][0] == "finished"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "magnitude,lottery"], "unknown method 'lottery'; choose from: magnitude, structured"),
        (["--sparsity", "0.5,1.2"], r"sparsity 1.2 is outside [0, 1)"),
        (["--model", "huge"], "unknown model 'huge'"),
        (["--batch-sizes", "0"], "must be a positive integer"),
        (["--set", "bogus=1"], "unknown run option(s): bogus"),
    ],
)
def test_bad_input_is_one_line_exit_2_before_any_work(tmp_path, args, message):
    out = tmp_path / "never"
    proc = _run([*args, "--out", str(out)], tmp_path / "cache")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_malformed_toml_names_the_line(tmp_path):
    bad = tmp_path / "run.toml"
    bad.write_text('[run]\nmodel = "small"\nmethods = [magnitude]\n')
    proc = _run(["--config", str(bad), "--out", str(tmp_path / "never")], tmp_path / "cache")
    assert proc.returncode == 2 and "malformed TOML" in proc.stderr and "line 3" in proc.stderr


#: A run with a search target and an extra backend, kept small: one method, two batch sizes (the backend stage
#: sweeps one batch size at a time, so a kill after its first cell leaves the second to the resume). Target 1.05:
#: the search runs on the fastest backend, and int8-legacy reaches only about 1.3x on this tiny shape (1.5 is
#: refused there as out of range, a failed variant that a resume rightly retries).
STAGES = ["--model", "small", "--quick", "--methods", "magnitude", "--sparsity", "0.5", "--batch-sizes", "1,2",
          "--seq-len", "32", "--threads", "1", "--allow-busy", "--train-budget", "20", "--backends",
          "eager,int8-legacy", "--targets", "1.05", "--set", "min_time=0.1", "--set", "max_time=0.4"]
SEARCHED = "search@1.05x"


def _units(store: Path) -> dict[tuple, tuple]:
    """Every stored unit by its key, with its whole row (``seq`` included: a unit stored again gets a new one)."""
    out = {}
    for table, key in (("variants", "name"), ("evaluations", "variant"), ("cells", "variant, backend, batch_size")):
        columns = len(key.split(","))
        for row in rows(store, f"SELECT {key}, * FROM {table}"):
            out[(table, *row[:columns])] = row[columns:]
    return out


def test_kill_9_in_the_search_and_backend_stages_then_resume_keeps_what_finished(tmp_path, cache):
    """kill -9 once the searched variant is stored, resume and kill -9 again once a backend cell is stored, then
    resume to the end: every unit stored before a kill is kept as it was (its row and the searched model's
    weights), and the run ends with every cell of every variant on both backends."""
    from prunebench.backends import BACKENDS

    if BACKENDS.get("int8-legacy").availability() is not None:  # torch dropped it: tests/test_backends.py
        pytest.skip(BACKENDS.get("int8-legacy").availability())
    out = tmp_path / "stages"
    store = out / "results.sqlite"
    env = {**os.environ, "PRUNEBENCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    start = [sys.executable, "-m", "prunebench", "run"]
    child = subprocess.Popen([*start, *STAGES, "--out", str(out)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
    kill_when(child, store, f"SELECT COUNT(*) FROM variants WHERE name='{SEARCHED}' AND status='ok'", 1,
              timeout=600, poll=0.05)
    searched = {p.name: p.read_bytes() for p in (out / "models" / "search_1.05x").iterdir()}
    first = _units(store)
    assert ("variants", SEARCHED) in first
    assert not any(k[0] == "cells" and k[2] == "int8-legacy" for k in first)

    child = subprocess.Popen([*start, "--resume", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=env)
    kill_when(child, store, "SELECT COUNT(*) FROM cells WHERE backend='int8-legacy'", 1, timeout=600, poll=0.05)
    assert rows(store, "PRAGMA integrity_check")[0][0] == "ok"
    second = _units(store)
    assert {k: second[k] for k in first} == first, "a unit stored before the first kill was redone"
    backend_cells = {k for k in second if k[0] == "cells" and k[2] == "int8-legacy"}
    assert 1 <= len(backend_cells) < 6  # killed within the backend stage, with cells left to do

    proc = _run(["--resume", str(out)], cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    final = _units(store)
    assert {k: final[k] for k in second} == second, "a unit stored before the second kill was redone"
    cells = {k[1:] for k in final if k[0] == "cells"}
    assert cells == {(v, b, bs) for v in ("dense", "magnitude@0.5", SEARCHED) for b in ("eager", "int8-legacy")
                     for bs in (1, 2)}
    assert all(r[0] == "ok" for r in rows(store, "SELECT status FROM cells"))
    assert {p.name: p.read_bytes() for p in (out / "models" / "search_1.05x").iterdir()} == searched
    assert rows(store, "SELECT status FROM runs")[0][0] == "finished"
