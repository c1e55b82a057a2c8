"""The run's backend stage: skips recorded, numerics-changing backends evaluated, resumed cells not redone."""

from __future__ import annotations

import copy

import pytest
import torch

from prunebench.backends import BACKENDS
from prunebench.bench.settings import bench_settings
from prunebench.models import EncoderConfig, build_encoder
from prunebench.runner.backend_stage import run_backend_stage

FAST = bench_settings("quick", min_time=0.0, max_time=0.3, min_pairs=2, threads=1, measure_memory=False,
                      allow_busy=True)


def test_stage_times_evaluates_and_skips():
    if BACKENDS.get("int8-legacy").availability() is not None:  # torch dropped it: tests/test_backends.py
        pytest.skip(BACKENDS.get("int8-legacy").availability())
    cfg = EncoderConfig.uniform(vocab_size=97, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_positions=64)
    dense = build_encoder(cfg, seed=0).eval()
    models = {"dense": dense, "other": copy.deepcopy(dense)}
    cells, evals, notes = [], [], []

    def evaluate(variant, backend, model, runnable):
        hidden = runnable.outputs({"input_ids": torch.ones(1, 4, dtype=torch.long)})  # what was timed, [B, S, D]
        evals.append((variant, backend, tuple(hidden.shape)))

    skips = run_backend_stage(
        ["eager", "int8-legacy", "sparse"], models, [1, 2], 8, FAST, vocab_size=97, on_cell=cells.append,
        evaluate=evaluate, done=lambda v, b, bs, s: (v, b, bs) == ("other", "int8-legacy", 2), progress=notes.append,
    )
    keys = [(c.variant, c.backend, c.batch_size, c.extra["backend_status"]) for c in cells]
    assert ("dense", "int8-legacy", 1, "ok") in keys and ("other", "int8-legacy", 1, "ok") in keys
    assert not any(k[:3] == ("other", "int8-legacy", 2) for k in keys)  # stored earlier: not timed again
    assert ("dense", "sparse", 1, "skipped") in keys  # no zeros: a skip with its reason, as a cell
    assert set(skips) == {"dense / sparse", "other / sparse"} and "zeros" in skips["dense / sparse"]
    assert evals == [("dense", "int8-legacy", (1, 4, 32)), ("other", "int8-legacy", (1, 4, 32))]
    assert not any(c.backend == "eager" for c in cells) and notes
