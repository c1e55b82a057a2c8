"""The results store: round trips, upserts, resume queries, bad input, exports, and crash safety under SIGKILL."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prunebench.errors import PrunebenchError
from prunebench.results import CSV_COLUMNS, ResultStore, load_snapshot, open_run
from tests.test_results_synthetic import BATCH_SIZES, fill_store, make_snapshot

RUN = {"run_id": "r1", "created": "2026-01-01T00:00:00+00:00", "config": {"seq_len": 8}, "environment": {}}


def _cell(variant: str = "dense", b: int = 1, **kw: object) -> dict:
    return {"variant": variant, "batch_size": b, "seq_len": 8, "status": "ok", "speedup": 1.0, **kw}


def test_store_is_wal_and_records_schema_version(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.start_run(RUN)
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    conn = sqlite3.connect(tmp_path / "results.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
    finally:
        conn.close()


def test_put_replaces_in_place_and_keeps_unknown_fields(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.start_run(RUN)
        store.put_cell(_cell("dense", 1))
        store.put_cell(_cell("dense", 2))
        store.put_cell(_cell("dense", 1, status="error", error="boom", speedup=None, future_figure=[1, 2]))
        cells = store.cells()
    assert [(c["batch_size"], c["status"]) for c in cells] == [(1, "error"), (2, "ok")]
    assert cells[0]["future_figure"] == [1, 2] and cells[0]["error"] == "boom"
    assert "future_figure" not in cells[1]


def test_resume_queries(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.start_run(RUN)
        store.put_variant({"name": "dense", "status": "ok"})
        store.put_evaluation({"variant": "dense", "accuracy": 0.9})
        store.put_cell(_cell("dense", 1))
        store.put_cell(_cell("dense", 2, status="error"))
        assert store.has_variant("dense") and store.has_variant("dense", status="ok")
        assert not store.has_variant("dense", status="failed") and not store.has_variant("wanda@0.5")
        assert store.has_evaluation("dense") and not store.has_evaluation("nm2:4")
        assert store.has_cell("dense", 1, 8, status="ok") and store.has_cell("dense", 2, 8)
        assert not store.has_cell("dense", 2, 8, status="ok") and not store.has_cell("dense", 1, 16)


def test_start_run_resumes_same_id_and_refuses_another(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "results.sqlite") as store:
        first = store.start_run({**RUN, "status": "finished", "note": "kept"})
        assert first["status"] == "running" and first["note"] == "kept"
        store.set_run_status("failed")
        again = store.start_run({**RUN, "created": "later", "config": {"seq_len": 999}})
        # resuming: the given fields win, run_id/created stay, status is running again, other fields survive
        assert again["status"] == "running" and again["config"] == {"seq_len": 999}
        assert again["created"] == RUN["created"] and again["note"] == "kept"
        with pytest.raises(PrunebenchError, match="already holds run 'r1'"):
            store.start_run({**RUN, "run_id": "r2"})
        assert store.get_run()["run_id"] == "r1"


def test_update_run_merges_fields(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "results.sqlite") as store:
        with pytest.raises(PrunebenchError, match="no run yet"):
            store.update_run({"corpus": {}})
        store.start_run(RUN)
        run = store.update_run({"corpus": {"task": "abc"}})
        assert run["corpus"] == {"task": "abc"} and run["config"] == RUN["config"] and run["status"] == "running"
        with pytest.raises(ValueError, match="cannot change run_id"):
            store.update_run({"run_id": "other"})
        with pytest.raises(ValueError, match="running, finished, failed"):
            store.update_run({"status": "done"})
    with ResultStore(tmp_path / "results.sqlite", create=False) as store:
        assert store.get_run()["corpus"] == {"task": "abc"}


@pytest.mark.parametrize(
    ("method", "record", "message"),
    [
        ("put_cell", _cell(status="weird"), "cells.status must be one of ok, oom, error"),
        ("put_cell", {"variant": "dense", "batch_size": 1, "status": "ok"}, "needs seq_len"),
        ("put_cell", _cell(batch_size="four"), "cells.batch_size must be an integer"),
        ("put_cell", _cell(timing="not a dict"), "cells.timing must be a dict"),
        ("put_variant", {"name": "x", "status": "maybe"}, "variants.status must be one of ok, failed"),
        ("put_variant", {"name": 3}, "variants.name must be a string"),
        ("put_evaluation", {"variant": "x", "accuracy": "high"}, "evaluations.accuracy must be a number"),
    ],
)
def test_bad_records_are_one_line_errors(tmp_path: Path, method: str, record: dict, message: str) -> None:
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.start_run(RUN)
        with pytest.raises(ValueError, match=message) as info:
            getattr(store, method)(record)
        assert "\n" not in str(info.value)
        assert store.cells() == [] and store.variants() == [] and store.evaluations() == []


def test_bad_run_status(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "results.sqlite") as store:
        with pytest.raises(PrunebenchError, match="no run yet"):
            store.set_run_status("finished")
        store.start_run(RUN)
        with pytest.raises(ValueError, match="running, finished, failed"):
            store.set_run_status("done")


def test_opening_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(PrunebenchError, match="no results store"):
        ResultStore(tmp_path / "missing.sqlite", create=False)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(PrunebenchError, match="not a readable prunebench results store"):
        ResultStore(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).close()
    with pytest.raises(PrunebenchError, match="not a prunebench results store"):
        ResultStore(other, create=False)
    with pytest.raises(PrunebenchError, match="no such directory"):
        open_run(tmp_path / "nope")
    with pytest.raises(PrunebenchError, match="no results.sqlite"):
        open_run(tmp_path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    ResultStore(tmp_path / "results.sqlite").close()
    conn = sqlite3.connect(tmp_path / "results.sqlite")
    with conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.close()
    with pytest.raises(PrunebenchError, match="schema version 99"):
        open_run(tmp_path)


def test_exports(tmp_path: Path) -> None:
    fill_store(tmp_path)
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.put_cell(_cell("dense", 8, seq_len=32, latency_ms=math.nan, latency_p90_ms=math.inf))
        j1 = store.export_json(tmp_path / "results.json").read_bytes()
        c1 = store.export_csv(tmp_path / "results.csv").read_bytes()
        assert store.export_json(tmp_path / "again.json").read_bytes() == j1
        assert store.export_csv(tmp_path / "again.csv").read_bytes() == c1
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644  # readable by others, not mkstemp's 0600
    data = json.loads(j1)  # strict JSON: NaN/inf became null
    assert data["run"]["run_id"] == "synthetic-0001" and data["cells"][-1]["latency_p90_ms"] is None
    rows = list(csv.DictReader(c1.decode().splitlines()))
    assert tuple(rows[0]) == CSV_COLUMNS
    snap = make_snapshot()
    with_cells = {c["variant"] for c in snap["cells"]}
    # one row per variant x batch size, plus the extra dense B=8 cell, plus one row for the variant without cells
    assert len(rows) == len(with_cells) * len(BATCH_SIZES) + 1 + (len(snap["variants"]) - len(with_cells))
    nm4 = next(r for r in rows if r["variant"] == "nm2:4" and r["batch_size"] == "4")
    assert nm4["cell_status"] == "error" and nm4["speedup"] == "" and nm4["accuracy"] == "0.83"
    wanda = next(r for r in rows if r["variant"] == "wanda@0.5")
    assert wanda["fidelity_ok"] == "False" and wanda["fidelity_max_abs_diff"] == "0.25"
    assert next(r for r in rows if r["variant"] == "iterative@0.8")["batch_size"] == ""


def test_load_snapshot_needs_a_run(tmp_path: Path) -> None:
    ResultStore(tmp_path / "results.sqlite").close()
    with pytest.raises(PrunebenchError, match="no run record"):
        load_snapshot(tmp_path)


_CHILD = textwrap.dedent(
    """
    import sys
    from prunebench.results import ResultStore
    store = ResultStore(sys.argv[1])
    store.start_run({"run_id": "crash", "config": {}, "environment": {}})
    for i in range(200000):
        store.put_cell({"variant": "v%d" % (i % 7), "batch_size": i + 1, "seq_len": 8, "status": "ok",
                        "speedup": i * 0.5, "raw": {"samples": [i * 0.001] * 2000}})
        print(i, flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_mid_write_loses_no_committed_row(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db)], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    reported: list[int] = []
    try:
        assert child.stdout is not None
        # The child prints each index after its commit; kill it while it keeps writing.
        while len(reported) < 40:
            line = child.stdout.readline()
            assert line, f"child exited early with {child.poll()}"
            reported.append(int(line))
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    reported += [int(x) for x in rest.split()]
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    with ResultStore(db, create=False) as store:
        stored = {c["batch_size"] - 1: c for c in store.cells()}
        assert set(reported) <= set(stored)
        assert all(stored[i]["speedup"] == i * 0.5 and len(stored[i]["raw"]["samples"]) == 2000 for i in reported)
        # ... and the store is still writable: a resumed run carries on.
        store.start_run({"run_id": "crash"})
        store.put_cell(_cell("after-crash"))
        assert store.has_cell("after-crash", 1, 8)


def test_cells_are_keyed_by_node_class_too(tmp_path: Path) -> None:
    # One run can time the same cell on several hardware classes: neither replaces the other.
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.start_run(RUN)
        store.put_cell(_cell("dense", 1, speedup=1.0))
        store.put_cell(_cell("dense", 1, speedup=2.0, node_class="gpu-box"))
        assert store.has_cell("dense", 1, 8) and store.has_cell("dense", 1, 8, node_class="gpu-box")
        assert not store.has_cell("dense", 1, 8, node_class="other")
        cells = store.cells()
    assert [(c["node_class"], c["speedup"]) for c in cells] == [("local", 1.0), ("gpu-box", 2.0)]
