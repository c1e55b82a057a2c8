"""A skipped cell is its own status: stored, read back (old stores too), and shown as a skip, never a failure."""

from __future__ import annotations

from pathlib import Path

from prunebench.analysis import analyze
from prunebench.report import build_report, summary_rows
from prunebench.report.summary import problems, status_tag
from prunebench.results import ResultStore
from prunebench.results.cell import CellRecord, normalize_cell_row
from tests.test_results_synthetic import SEQ_LEN, fill_store, make_snapshot

RUN = {"run_id": "r1", "created": "2026-01-01T00:00:00+00:00", "config": {"seq_len": 8}, "environment": {}}


def _skip(variant: str, backend: str, b: int, reason: str) -> dict:
    return {"variant": variant, "backend": backend, "batch_size": b, "seq_len": SEQ_LEN, "status": "skipped",
            "error": reason, "backend_status": "skipped", "backend_message": reason}


def test_store_keeps_skipped_and_reads_older_skips_as_skipped(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.start_run(RUN)
        store.put_cell(_skip("dense", "sparse", 1, "no zeros"))
        # How a skip was stored before ``skipped`` was a status: an error with the kind in its message.
        store.put_cell({"variant": "structured@0.5", "backend": "sparse", "batch_size": 1, "seq_len": 8,
                        "status": "error", "error": "skipped: shrunk", "backend_status": "skipped",
                        "backend_message": "shrunk"})
        store.put_cell({"variant": "magnitude@0.9", "backend": "sparse", "batch_size": 1, "seq_len": 8,
                        "status": "error", "error": "fidelity: wrong", "backend_status": "fidelity"})
        rows = {c["variant"]: c for c in store.cells()}
        records = {r.variant: r for r in store.cell_records()}
        assert store.has_cell("dense", 1, SEQ_LEN, status="skipped", backend="sparse")
    assert (rows["dense"]["status"], rows["dense"]["error"]) == ("skipped", "no zeros")
    assert (rows["structured@0.5"]["status"], rows["structured@0.5"]["error"]) == ("skipped", "shrunk")
    assert rows["magnitude@0.9"]["status"] == "error"  # a failed fidelity check stays a failure
    assert records["dense"].skipped and not records["dense"].failed and not records["dense"].ok
    assert records["magnitude@0.9"].failed and not records["magnitude@0.9"].skipped
    assert normalize_cell_row({"status": "error", "error": "skipped: x", "backend_status": "skipped"})["error"] == "x"
    assert CellRecord("v", 1, 8, status="oom").failed


def test_summary_and_report_show_a_skip_as_a_skip(tmp_path: Path) -> None:
    snap = make_snapshot()
    # One eager cell skipped (the generic path of the main tables) and a backend skip beside a timed backend cell.
    cells = [c for c in snap["cells"] if not (c["variant"] == "magnitude@0.8" and c["batch_size"] == 1)]
    ok_sparse = {**next(c for c in cells if c["variant"] == "magnitude@0.8"), "backend": "sparse"}
    snap["cells"] = [*cells, _skip("magnitude@0.8", "eager", 1, "not expressible here"), ok_sparse,
                     _skip("structured@0.5", "sparse", 1, "a shrunk model has no zeros")]
    run_dir = fill_store(tmp_path / "run", snap)
    with ResultStore(run_dir / "results.sqlite", create=False) as store:
        eager = {**store.snapshot()}
    eager["cells"] = [c for c in eager["cells"] if c["backend"] == "eager"]
    rows = {r.variant: r for r in summary_rows(eager)}
    row = rows["magnitude@0.8"]
    assert row.skipped_cells == 1 and row.failed_cells == 0 and row.problems == ()
    assert status_tag(row) == "1 cell skipped"
    assert not any("magnitude@0.8" in p for p in problems(analyze(eager)))

    paths = build_report(run_dir)
    summary = paths["summary.md"].read_text()
    line = next(ln for ln in summary.splitlines() if ln.startswith("| magnitude@0.8 "))
    assert "skipped" in line and "FAILED" not in line
    assert "- structured@0.5 / sparse: a shrunk model has no zeros" in summary  # the deploy section's skip list
    html = paths["report.html"].read_text()
    assert "a shrunk model has no zeros" in html and "not expressible here" in html
