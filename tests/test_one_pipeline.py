"""One pipeline for every model: our own encoder and a pretrained Hugging Face folder go through the same stages
(every method, extra backends, a search target, both executors) and store the same cells.

The Ray run keeps every method but times two backends and searches no target: the search runs on the driver
whatever the executor, and the backend stage likewise (in the driver process); what Ray adds, prepare and timing
units for a pretrained model shipped as its folder's files, is what it tests, within the suite's time budget.

Targets: a tiny model cannot reach 1.5x (its fixed per-call costs dominate: the search says the reachable range
is about (1, 1.13] here), so the search target is 1.05; what is tested is that the search runs for both kinds.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from prunebench.sources import CHECK_TEXTS
from tests import hf_text_fixtures as fx

pytestmark = pytest.mark.slow

METHODS = "magnitude,structured,iterative,wanda,nm"
#: These runs also carry the backend stage's end-to-end checks (fidelity before timing, accuracy on the backend,
#: skips). OpenVINO int8 is left to its own tests: NNCF's calibration took 25-35 s per variant of these tiny
#: models, and on the random tiny BERT its static int8 falls below the 0.98 cosine the stage requires (as it should
#: be: the stage refuses to time it).
BACKENDS = "eager,int8-legacy,onnxruntime-int8,sparse"
ARGS = ["--quick", "--methods", METHODS, "--sparsity", "0.5", "--backends", BACKENDS, "--targets", "1.05",
        "--batch-sizes", "1", "--seq-len", "16", "--threads", "1", "--train-budget", "20",
        "--set", "min_time=0.1", "--set", "max_time=0.4", "--set", "iterative_steps=2", "--allow-busy"]
#: A pretrained model is not trained: --train-budget is refused for it (never ignored).
HF_ARGS = [a for i, a in enumerate(ARGS) if "--train-budget" not in ARGS[max(i - 1, 0):i + 1]]
VARIANTS = {"dense", "magnitude@0.5", "structured@0.5", "iterative@0.5", "wanda@0.5", "nm2:4", "search@1.05x"}


def _start(model: str, out: Path, cache: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PRUNEBENCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    return subprocess.Popen([sys.executable, "-m", "prunebench", "run", "--model", model, *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def _stored(out: Path, proc: subprocess.Popen, wanted: set[str]) -> set[tuple[str, str, int]]:
    """The stored cell keys of a finished run, after checking every variant is stored ok and evaluated."""
    _, err = proc.communicate(timeout=900)
    assert (out / "results.sqlite").exists(), err[-3000:]
    con = sqlite3.connect(out / "results.sqlite")
    try:
        cells = {(v, b, bs) for v, b, bs in con.execute("SELECT variant, backend, batch_size FROM cells")}
        variants = dict(con.execute("SELECT name, status FROM variants").fetchall())
        evaluated = {v for (v,) in con.execute("SELECT variant FROM evaluations")}
    finally:
        con.close()
    assert variants.keys() == wanted, (variants, err[-3000:])
    assert all(status == "ok" for status in variants.values()), (variants, err[-3000:])
    assert evaluated == wanted
    return cells


@pytest.fixture(scope="module")
def runs(tmp_path_factory, quick_cache) -> dict:
    """The three runs, started together (each on one thread; nothing here is a timing claim: --allow-busy), so
    the suite waits for the longest, not for their sum."""
    root = tmp_path_factory.mktemp("one-pipeline")
    hf = fx.base_model_folder(root)
    ray_args = [a for a in HF_ARGS if a not in (BACKENDS, "--targets", "1.05")]
    ray_args[ray_args.index("--backends") + 1:ray_args.index("--backends") + 1] = ["eager,int8-legacy"]
    started = {"small": _start("small", root / "small", quick_cache, *ARGS),
               "hf": _start(str(hf), root / "hf", root / "cache-hf", *HF_ARGS)}
    if importlib.util.find_spec("ray") is not None:
        started["ray"] = _start(str(hf), root / "ray", root / "cache-ray", *ray_args, "--executor", "ray")
    stored: dict = {name: _stored(root / name, proc, VARIANTS if name != "ray" else VARIANTS - {"search@1.05x"})
                    for name, proc in started.items()}
    return {**stored, "root": root}


def test_built_in_and_pretrained_models_store_the_same_cells(runs) -> None:
    expected = {(v, b, 1) for v in VARIANTS for b in BACKENDS.split(",")}
    assert runs["small"] == runs["hf"] == expected


def test_a_pretrained_model_runs_on_the_ray_executor(runs) -> None:
    if "ray" not in runs:
        pytest.skip("ray is not installed: pip install -e \".[ray]\"")
    assert runs["ray"] == {(v, b, 1) for v in VARIANTS - {"search@1.05x"} for b in ("eager", "int8-legacy")}


@pytest.mark.parametrize("name", ["small", "hf"])
def test_every_backend_is_checked_before_timing_and_scored_where_it_changes_the_numerics(runs, name) -> None:
    import json

    out = runs["root"] / name
    con = sqlite3.connect(out / "results.sqlite")
    try:
        rows = con.execute("SELECT variant, backend, batch_size, status, speedup, extra FROM cells").fetchall()
    finally:
        con.close()
    cells = {(v, b): (st, sp, json.loads(ex)) for v, b, _, st, sp, ex in rows}
    quantized = [b for b in BACKENDS.split(",") if b.endswith("int8")]
    for v in VARIANTS:
        assert cells[v, "eager"][0] == "ok"
        for backend in quantized:
            status, speedup, extra = cells[v, backend]
            if v != "dense" and status != "ok":
                # A variant whose int8 outputs miss eager (dynamic int8 of the random tiny BERT's 2:4 model once
                # read cosine 0.989 < 0.99) is refused, never timed, and says why.
                assert extra["backend_status"] == "fidelity" and speedup is None, (name, v, backend, status, extra)
                assert "does not match eager" in extra["backend_message"], extra
                continue
            assert status == "ok" and speedup > 0 and extra["fidelity"]["ok"], (name, v, backend, extra)
            # Checked on the timed ids and on held-out rows of the run's task text, before the first block.
            assert extra["fidelity"]["text"]["ok"] and extra["fidelity"]["text"]["rows"] == CHECK_TEXTS, extra
            assert extra["backend_accuracy"] is not None and extra["backend_changes_numerics"], (name, v, backend)
    # sparse: a 50%-zeros model is prepared (and checked); the dense and the shrunk ones are recorded skips
    assert cells["magnitude@0.5", "sparse"][2]["backend_status"] == "ok"
    for v in ("dense", "structured@0.5"):
        status, _, extra = cells[v, "sparse"]
        assert status == "skipped" and extra["backend_status"] == "skipped" and "zeros" in extra["backend_message"]
    summary = (out / "summary.md").read_text()
    assert "## What to deploy" in summary and "| onnxruntime-int8 |" in summary
    assert "- dense / sparse: no Linear is at least 50% zeros" in summary
    assert '<section id="deploy">' in (out / "report.html").read_text()


def test_a_quick_run_of_a_pretrained_model_scores_a_capped_test_sample(runs) -> None:
    """``--quick`` scores the labelled task on :data:`QUICK_TEST_TEXTS` test texts, every variant the same ones
    (a full run scores the whole split; the paired CIs need the same texts on both sides)."""
    import json

    from prunebench.sources import QUICK_TEST_TEXTS

    con = sqlite3.connect(runs["root"] / "hf" / "results.sqlite")
    try:
        details = [json.loads(d) for (d,) in con.execute("SELECT details FROM evaluations")]
    finally:
        con.close()
    assert details and {d["n_predictions"] for d in details} == {QUICK_TEST_TEXTS}
