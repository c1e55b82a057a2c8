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


def test_a_backend_that_misses_eager_on_task_text_is_neither_evaluated_nor_timed(monkeypatch):
    """The held-out text check comes before the (minutes-long) evaluation on the backend: a runtime whose cells
    will be refused on that text is not scored first."""
    from dataclasses import replace

    import prunebench.runner.backend_stage as stage
    from prunebench.backends.torch_backends import EagerBackend
    from tests.conftest import random_batch

    class Flaky(EagerBackend):
        """Eager's numbers on unpadded rows (the timed batch), noise on padded ones (real text)."""

        name = "flaky"
        changes_numerics = True

        def prepare(self, model, options):
            eager = super().prepare(model, options)

            def outputs(batch):
                got = eager.outputs(batch)
                mask = batch.get("attention_mask")
                return torch.randn_like(got) if mask is not None and bool((mask == 0).any()) else got

            return replace(eager, backend=self.name, outputs=outputs)

    registry = {"eager": EagerBackend(), "flaky": Flaky()}
    monkeypatch.setattr(stage, "BACKENDS", type("R", (), {"get": staticmethod(registry.__getitem__)})())
    cfg = EncoderConfig.uniform(vocab_size=97, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_positions=64)
    models = {"dense": build_encoder(cfg, seed=0).eval()}
    for text, evaluated, status in ((None, 1, "ok"), (random_batch(97), 0, "fidelity")):
        cells, evals = [], []
        run_backend_stage(["eager", "flaky"], models, [1], 8, FAST, vocab_size=97, on_cell=cells.append,
                          evaluate=lambda v, b, m, r, seen=evals: seen.append(v), check_text=text)
        assert len(evals) == evaluated and [c.extra["backend_status"] for c in cells] == [status]
    assert "held-out task text" in cells[0].extra["backend_message"]
