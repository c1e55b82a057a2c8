"""Backend cells are timed by the block sweep: interleaved blocks, one fidelity check, eval mode before every block."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from prunebench.backends import FP32, Runnable
from prunebench.backends.cells import FIDELITY, Prepared, bench_backends
from prunebench.backends.torch_backends import torch_runnable
from prunebench.bench.settings import BenchSettings
from prunebench.models import EncoderConfig, build_encoder

#: Three blocks of one ABBA round each, then stop: no budget clock or precision target decides.
BLOCKS = BenchSettings(warmup=1, min_time=0.0, min_pairs=2, max_time=1e6, block_pairs=2, min_blocks=3,
                       block_warmup=0, target_ci=None, n_boot=50, measure_memory=False, threads=1, allow_busy=True)


class FakeTimer:
    """Runs the call and says it took 1 ms (the test is about order, not speed)."""

    kind = "fake"

    def __call__(self, fn: Callable[[], Any]) -> float:
        fn()
        return 1e-3


def fake_clock() -> Callable[[], float]:
    ticks = itertools.count()
    return lambda: next(ticks) * 1e-3


@pytest.fixture
def model():
    cfg = EncoderConfig.uniform(vocab_size=97, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_positions=32)
    return build_encoder(cfg, seed=0).eval()


def logged(runnable: Runnable, label: str, log: list[str], after: Callable[[int], None] | None = None) -> Runnable:
    """``runnable`` whose timed calls append ``label`` to ``log`` (and run ``after(n)`` after its n-th call),
    and whose fidelity checks append ``label + ':check'``."""
    count = itertools.count(1)

    def bind(batch):
        fn = runnable.bind(batch)

        def call():
            log.append(label)
            out = fn()
            if after is not None:
                after(next(count))
            return out

        return call

    def outputs(batch):
        log.append(f"{label}:check")
        return runnable.outputs(batch)

    return dataclasses.replace(runnable, bind=bind, outputs=outputs)


def runs(labels: list[str]) -> list[str]:
    """Consecutive runs of equal labels collapsed to one."""
    return [k for k, _ in itertools.groupby(labels)]


def test_backend_cells_are_timed_in_interleaved_blocks_after_one_fidelity_check(model):
    log: list[str] = []
    base = Prepared("dense", "eager", model, runnable=logged(torch_runnable("eager", model, FP32), "base", log))
    cands = [Prepared("dense", name, model, runnable=logged(torch_runnable(name, copy.deepcopy(model), FP32),
                                                            name, log))
             for name in ("fake-a", "fake-b")]
    got: list = []
    cells = bench_backends(cands, base, (2,), 8, BLOCKS, vocab_size=97, on_cell=got.append, timer=FakeTimer(),
                           clock=fake_clock())
    # One cell per candidate; the baseline is not timed against a twin (the eager sweep's twin is the floor).
    assert [(c.variant, c.backend) for c in cells] == [("dense", "fake-a"), ("dense", "fake-b")] == [
        (c.variant, c.backend) for c in sorted(got, key=cells.index)]
    for c in cells:
        assert c.ok and c.baseline == "dense" and c.extra["baseline_backend"] == "eager"
        assert c.n_blocks == 3 and c.timing["block_sizes"] == [2, 2, 2] and c.timing["order"] == "ABBA/BAAB"
        assert c.stop_reason == "min_reached" and c.speedup == pytest.approx(1.0) and c.n_pairs == 6
        assert c.extra["fidelity"]["ok"] and c.extra["backend_status"] == "ok" and c.threads == 1
    # Each fidelity check ran once, before any timed call of its cell.
    checks = [x for x in log if x.endswith(":check")]
    assert sorted(checks) == ["base:check", "base:check", "fake-a:check", "fake-b:check"]
    assert max(log.index(x) for x in checks) < min(log.index("fake-a"), log.index("fake-b"))
    # Round-robin: each cell's calls come in several stretches, with the other cell's blocks in between.
    timed = runs([x for x in log if x in ("fake-a", "fake-b")])
    assert timed.count("fake-a") >= 2 and timed.count("fake-b") >= 2


def test_a_runnable_switched_to_train_mode_between_blocks_is_caught(model):
    log: list[str] = []
    wrong = copy.deepcopy(model)

    def flip(n: int) -> None:
        if n == 2:  # inside the first block: the fidelity check before it passed
            wrong.train()

    base = Prepared("dense", "eager", model, runnable=logged(torch_runnable("eager", model, FP32), "base", log))
    bad = Prepared("dense", "fake-bad", model, runnable=logged(torch_runnable("fake-bad", wrong, FP32), "bad", log,
                                                                after=flip))
    good = Prepared("dense", "fake-good", model,
                    runnable=logged(torch_runnable("fake-good", copy.deepcopy(model), FP32), "good", log))
    bad_cell, good_cell = bench_backends([bad, good], base, (2,), 8, BLOCKS, vocab_size=97, timer=FakeTimer(),
                                         clock=fake_clock())
    # Caught before its next block: a failed fidelity cell with no timings, never a timed one.
    assert bad_cell.status == "error" and bad_cell.extra["backend_status"] == FIDELITY
    assert bad_cell.error.startswith("fidelity: fake-bad: module(s) in training mode")
    assert bad_cell.latency_ms is None and bad_cell.speedup is None and bad_cell.timing == {}
    assert bad_cell.n_pairs == 0 and bad_cell.macs is not None
    # Not one call of it after its first block ended (the other cell's block came next).
    flipped = [i for i, x in enumerate(log) if x == "bad"][1]
    later = log[flipped:]
    assert "bad" not in later[later.index("good"):]
    # The other cell of the same sweep is unaffected.
    assert good_cell.ok and good_cell.n_blocks == 3


def test_a_baseline_with_its_own_call_is_never_twinned(model):
    from prunebench.bench.inputs import make_inputs
    from prunebench.bench.sweep import sweep
    from prunebench.bench.sweep_state import Subject

    runnable = torch_runnable("eager", model, FP32)
    base = Subject("dense", model, "eager", call_for=runnable.bind)
    with pytest.raises(ValueError, match="cannot be twinned; skip its cell"):
        sweep({"dense": base}, lambda b, s: make_inputs(97, b, s), (1,), (8,), "dense", settings=BLOCKS)
