"""End to end: `prunebench run --backends ...` stores a cell per (variant, backend, batch), evaluates accuracy on
backends that change the numerics, records skips, keeps the main tables eager-only and adds "What to deploy"."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ARGS = ["--model", "small", "--quick", "--methods", "magnitude,structured", "--sparsity", "0.75", "--batch-sizes",
        "1", "--seq-len", "32", "--threads", "1", "--backends",
        "eager,int8-legacy,sparse,onnxruntime-int8,openvino-int8", "--allow-busy", "--train-budget", "20"]


def test_run_with_backends(tmp_path: Path, quick_cache: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    env = {**os.environ, "PRUNEBENCH_CACHE": str(quick_cache), "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "prunebench", "run", *ARGS, "--out", str(out)], capture_output=True,
                          text=True, env=env, check=False, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    con = sqlite3.connect(out / "results.sqlite")
    try:
        rows = con.execute("SELECT variant, backend, batch_size, status, speedup, extra FROM cells").fetchall()
    finally:
        con.close()
    cells = {(v, b, bs): (st, sp, json.loads(ex)) for v, b, bs, st, sp, ex in rows}
    variants = ("dense", "magnitude@0.75", "structured@0.75")
    for v in variants:
        for bs in (1,):
            assert cells[v, "eager", bs][0] == "ok"
            for backend in ("int8-legacy", "onnxruntime-int8", "openvino-int8"):
                status, speedup, extra = cells[v, backend, bs]
                assert status == "ok" and speedup > 0 and extra["fidelity"]["ok"], (v, backend, extra)
                assert extra["backend_accuracy"] is not None and extra["backend_changes_numerics"]
    # sparse: the 75% model is prepared (and checked); the dense and shrunk ones are recorded skips
    assert cells["magnitude@0.75", "sparse", 1][2]["backend_status"] == "ok"
    for v in ("dense", "structured@0.75"):
        status, _, extra = cells[v, "sparse", 1]
        assert status == "skipped" and extra["backend_status"] == "skipped" and "zeros" in extra["backend_message"]
    summary = (out / "summary.md").read_text()
    assert "## What to deploy" in summary and "| structured@0.75 | onnxruntime-int8 |" in summary
    assert "- dense / sparse: no Linear is at least 50% zeros" in summary
    assert '<section id="deploy">' in (out / "report.html").read_text()
