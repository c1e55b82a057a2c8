"""Backend cells: skips, fidelity failures (never timed), recorded fields; ``prunebench bench --backend``."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from prunebench.backends import BACKENDS, FP32, PrepareOptions
from prunebench.backends.cells import FIDELITY, SKIPPED, Prepared, backend_cell, prepare_variant
from prunebench.backends.memory import rss_peak
from prunebench.backends.torch_backends import torch_runnable
from prunebench.bench.inputs import make_inputs
from prunebench.bench.settings import bench_settings
from prunebench.cli.main import main
from prunebench.models import EncoderConfig, build_encoder

FAST = bench_settings("quick", min_time=0.0, max_time=0.5, min_pairs=2, threads=1, allow_busy=True)
OPTS = PrepareOptions(threads=1, shapes=((2, 8),))


@pytest.fixture
def model():
    cfg = EncoderConfig.uniform(vocab_size=97, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_positions=64)
    return build_encoder(cfg, seed=0).eval()


def test_ok_cell_records_backend_fidelity_and_conditions(model):
    base = prepare_variant(BACKENDS.get("eager"), "dense", model, OPTS)
    cand = prepare_variant(BACKENDS.get("int8-legacy"), "dense", model, OPTS)
    cell = backend_cell(base, cand, make_inputs(97, 2, 8), FAST)
    assert cell.ok and cell.speedup > 0 and cell.n_pairs >= 2 and cell.threads == 1
    assert cell.key == ("dense", "int8-legacy", 2, 8, "local") and cell.extra["baseline_backend"] == "eager"
    assert cell.extra["fidelity"]["ok"] and cell.extra["fidelity"]["cosine"] > 0.99
    assert "quantize_dynamic" in cell.extra["backend_env"]["int8_path"]
    assert cell.peak_memory_bytes is not None and cell.macs > 0 and cell.flop_ideal_speedup == pytest.approx(1.0)
    assert cell.load_1m_before is not None and cell.contended is not None  # machine load recorded per cell
    json.dumps(cell.to_row())  # the record is plain data


def test_skipped_variant_is_a_cell_with_its_reason(model):
    base = prepare_variant(BACKENDS.get("eager"), "dense", model, OPTS)
    cand = prepare_variant(BACKENDS.get("sparse"), "structured@0.5", model, OPTS)
    assert cand.runnable is None and "zeros" in cand.skip
    cell = backend_cell(base, cand, make_inputs(97, 2, 8), FAST)
    # A skip is its own status with its reason (not an error, not a failure).
    assert cell.status == "skipped" and cell.skipped and not cell.failed and cell.error == cand.skip
    assert cell.extra["backend_status"] == SKIPPED and cell.latency_ms is None


def test_a_runnable_in_training_mode_becomes_a_fidelity_cell_and_is_not_timed(model):
    base = prepare_variant(BACKENDS.get("eager"), "dense", model, OPTS)
    wrong = copy.deepcopy(model).train()
    cand = Prepared("dense", "eager", model, runnable=torch_runnable("eager", wrong, FP32))
    cell = backend_cell(base, cand, make_inputs(97, 2, 8), FAST)
    assert cell.extra["backend_status"] == FIDELITY and "training mode" in cell.error
    assert cell.latency_ms is None and cell.timing == {} and cell.n_pairs == 0


def test_rss_peak_sees_a_large_allocation():
    peak = rss_peak(lambda: torch.ones(64 * 2**20 // 4).sum())  # 64 MiB touched
    if peak is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert peak >= 32 * 2**20


def test_bench_cli_backend(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "small", "--backend", "int8-legacy", "--batch-sizes", "1", "--seq-len", "16", "--budget",
               "quick", "--threads", "1", "--min-time", "0", "--max-time", "0.3", "--json", str(out), "--allow-busy"])
    assert rc == 0
    doc = json.loads(out.read_text())
    (cell,) = doc["cells"]
    assert cell["variant"] == "small [int8-legacy]" and cell["baseline"] == "small"
    assert cell["backend"] == "int8-legacy" and cell["status"] == "ok"


def test_bench_cli_unknown_backend_names_the_valid_ones(capsys):
    assert main(["bench", "small", "--backend", "tensorrt"]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'tensorrt'; choose from: eager, int8" in err and "Traceback" not in err


def test_list_backends_says_what_runs_here(capsys):
    assert main(["list", "backends"]) == 0
    out = capsys.readouterr().out
    for name in ("eager", "int8-legacy", "onnxruntime-int8", "semi-structured"):
        assert name in out
    if not torch.cuda.is_available():
        assert "no: semi-structured" in out
