"""Timing logic under a fake clock: stopping rule, warm-up exclusion, statistics, ABBA pairing, CUDA events."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prunebench.bench.records import LatencyStats, PairedResult
from prunebench.bench.stats import bootstrap_median_ci, summarize
from prunebench.bench.timing import CudaEventTimer, WallTimer, measure, pinned_threads, time_paired, timer_for


class FakeClock:
    """A clock that only moves when a fake workload advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def workload(clock: FakeClock, durations, log: list | None = None, tag: str = ""):
    """A callable whose i-th call takes durations[i] (the last value repeats)."""
    calls = {"i": 0}

    def fn() -> None:
        i = calls["i"]
        clock.now += durations[min(i, len(durations) - 1)]
        calls["i"] += 1
        if log is not None:
            log.append(tag)

    return fn


def test_measure_excludes_warmup_and_keeps_first_call() -> None:
    clock = FakeClock()
    fn = workload(clock, [5.0, 2.0, 2.0, 1.0])
    stats = measure(fn, warmup=3, min_time=0.0, min_iters=4, max_iters=100, clock=clock)
    assert stats.first_call_s == 5.0
    assert stats.warmup == 3
    assert stats.samples == [1.0, 1.0, 1.0, 1.0]
    assert stats.median == 1.0 and stats.std == 0.0 and stats.cv == 0.0


def test_measure_stops_on_min_time_and_min_iters() -> None:
    clock = FakeClock()
    stats = measure(workload(clock, [0.25]), warmup=1, min_time=2.0, min_iters=3, clock=clock)
    assert stats.n == 8  # time, not count, was the binding minimum
    clock = FakeClock()
    stats = measure(workload(clock, [1.0]), warmup=1, min_time=1.0, min_iters=7, clock=clock)
    assert stats.n == 7  # count was binding


def test_measure_respects_maximums() -> None:
    clock = FakeClock()
    assert measure(workload(clock, [1.0]), warmup=1, min_time=100, min_iters=50, max_time=5, clock=clock).n == 5
    clock = FakeClock()
    assert measure(workload(clock, [0.001]), warmup=1, min_time=100, min_iters=2, max_iters=9, clock=clock).n == 9


def test_measure_calls_per_sample_averages_a_block() -> None:
    clock = FakeClock()
    stats = measure(workload(clock, [9.0, 1.0, 3.0]), warmup=1, min_time=0, min_iters=1, max_iters=1,
                    calls_per_sample=2, clock=clock)
    assert stats.samples == [2.0] and stats.calls_per_sample == 2


@pytest.mark.parametrize("kwargs", [{"warmup": 0}, {"min_iters": 0}, {"min_iters": 5, "max_iters": 4},
                                    {"max_time": 0.0}, {"threads": 0}])
def test_measure_bad_budget(kwargs) -> None:
    with pytest.raises(ValueError):
        measure(lambda: None, **kwargs)


def test_summarize_statistics() -> None:
    x = [float(v) for v in range(1, 101)]
    s = summarize(x)
    assert s.mean == pytest.approx(50.5)
    assert s.median == pytest.approx(50.5)
    assert s.p90 == pytest.approx(np.percentile(x, 90))
    assert s.p99 == pytest.approx(np.percentile(x, 99))
    assert s.std == pytest.approx(np.std(x, ddof=1))
    assert s.cv == pytest.approx(s.std / s.mean)
    assert (s.min, s.max, s.n, s.total_s) == (1.0, 100.0, 100, 5050.0)
    with pytest.raises(ValueError):
        summarize([])


def test_compare_runs_abba_and_pairs_correctly() -> None:
    clock = FakeClock()
    log: list[str] = []
    a = workload(clock, [4.0], log, "A")
    b = workload(clock, [2.0], log, "B")
    res = time_paired(a, b, warmup=1, min_time=0, min_pairs=4, clock=clock)
    assert log[:2] == ["A", "B"]  # warm-up, one each
    assert log[2:] == list("ABBA" + "BAAB")  # rounds alternate, so neither side always follows a pause
    assert res.order == "ABBA/BAAB" and res.n_pairs == 4
    assert res.ratios == [2.0] * 4 and res.speedup == 2.0
    assert res.ci_low == res.ci_high == 2.0
    assert res.baseline.median == 4.0 and res.candidate.median == 2.0
    assert res.stop_reason == "min_reached"


def test_compare_ratio_cancels_a_drifting_machine() -> None:
    # The machine slows down 10x half way; each pair is still 2x, so the paired speedup stays exact while the
    # two sides' own medians are wildly dispersed.
    clock = FakeClock()
    speed = {"factor": 1.0, "calls": 0}

    def make(cost: float):
        def fn() -> None:
            speed["calls"] += 1
            if speed["calls"] > 20:
                speed["factor"] = 10.0
            clock.now += cost * speed["factor"]
        return fn

    res = time_paired(make(2.0), make(1.0), warmup=1, min_time=0, min_pairs=20, clock=clock)
    assert all(r == pytest.approx(2.0) for r in res.ratios)
    assert res.speedup == pytest.approx(2.0)
    assert res.baseline.cv > 0.5


def test_compare_stops_on_precision_and_on_max_time() -> None:
    clock = FakeClock()
    rng = np.random.default_rng(1)
    noise = list(1.0 + 0.01 * rng.standard_normal(10_000))
    res = time_paired(workload(clock, noise), workload(clock, [1.0]), warmup=1, min_time=0, min_pairs=8,
                  max_pairs=5000, target_ci=0.05, clock=clock)
    assert res.stop_reason == "precision" and res.n_pairs < 100
    assert res.ci_half_width_rel <= 0.05
    clock = FakeClock()
    res = time_paired(workload(clock, [1.0]), workload(clock, [1.0]), warmup=1, min_time=100, min_pairs=4,
                  max_time=10, clock=clock)
    assert res.stop_reason == "max_time" and res.n_pairs == 6  # rounds of 4s: stops after 12s


def test_stopping_checks_alternate_which_side_runs_next() -> None:
    # Blocks of 4 pairs, a check after each: the first call after a check alternates between A and B.
    clock = FakeClock()
    log: list[str] = []
    time_paired(workload(clock, [2.0], log, "A"), workload(clock, [1.0], log, "B"), warmup=1, min_time=0,
                min_pairs=16, max_time=1e6, check_every=4, clock=clock)
    timed = log[2:]
    firsts = [timed[i] for i in range(0, len(timed), 8)]  # 8 calls per block of 4 pairs
    assert firsts == ["A", "B", "A", "B"]
    assert timed.count("A") == timed.count("B") == 16


def test_block_bootstrap_widens_with_drift_between_blocks() -> None:
    from prunebench.bench.stats import block_bootstrap_median_ci

    rng = np.random.default_rng(0)
    # Eight blocks whose level drifts (+-5%) while pairs inside a block agree to 0.1%.
    blocks = [list(level + 0.001 * rng.standard_normal(8)) for level in 1.0 + 0.05 * rng.standard_normal(8)]
    flat = [x for b in blocks for x in b]
    _, lo_pooled, hi_pooled = bootstrap_median_ci(flat, 0.95, 1000, seed=0)
    med, lo, hi = block_bootstrap_median_ci(blocks, 0.95, 1000, seed=0)
    assert lo <= med <= hi and med == pytest.approx(float(np.median(flat)))
    assert (hi - lo) > 1.5 * (hi_pooled - lo_pooled)  # the pooled CI describes one stretch, not the machine
    assert block_bootstrap_median_ci(blocks, 0.95, 1000, seed=0) == (med, lo, hi)  # seeded


def test_t_quantile() -> None:
    from prunebench.bench.stats import t_quantile

    for df, want in ((1, 12.706), (2, 4.303), (3, 3.182), (5, 2.571), (10, 2.228), (30, 2.042), (1000, 1.962)):
        assert t_quantile(0.975, df) > t_quantile(0.95, df)
        assert t_quantile(0.975, df) == pytest.approx(want, abs=2e-3)


def test_bootstrap_is_seeded_and_covers_the_median() -> None:
    x = list(np.random.default_rng(0).lognormal(0.0, 0.1, 200))
    m1 = bootstrap_median_ci(x, 0.95, 1000, seed=3)
    assert m1 == bootstrap_median_ci(x, 0.95, 1000, seed=3)
    med, lo, hi = m1
    assert lo < med < hi and hi - lo < 0.1
    with pytest.raises(ValueError):
        bootstrap_median_ci(x, confidence=1.5)


class FakeEvent:
    """Stands in for torch.cuda.Event: elapsed_time reads a fake GPU clock in milliseconds."""

    def __init__(self, gpu: dict, log: list) -> None:
        self.gpu, self.log, self.t = gpu, log, None

    def record(self) -> None:
        self.t = self.gpu["ms"]
        self.log.append("record")

    def synchronize(self) -> None:
        self.log.append("event-sync")

    def elapsed_time(self, other: FakeEvent) -> float:
        return other.t - self.t


def test_cuda_event_timer_with_fake_events() -> None:
    gpu = {"ms": 0.0}
    log: list[str] = []
    timer = CudaEventTimer(event_factory=lambda: FakeEvent(gpu, log), sync=lambda: log.append("device-sync"))

    def kernel() -> None:
        gpu["ms"] += 25.0  # the device work takes 25 ms, whatever the host clock says
        log.append("fn")

    clock = FakeClock()
    stats = measure(kernel, warmup=2, min_time=0, min_iters=3, timer=timer, clock=clock)
    assert stats.samples == [0.025] * 3 and stats.timer == "cuda-events"
    assert log[:5] == ["device-sync", "record", "fn", "record", "event-sync"]


def test_wall_timer_syncs_around_the_call() -> None:
    clock, log = FakeClock(), []
    timer = WallTimer(clock, sync=lambda: log.append("sync"))
    assert timer(workload(clock, [0.5], log, "fn")) == 0.5
    assert log == ["sync", "fn", "sync"]


def test_timer_for_device() -> None:
    assert timer_for("cpu").kind == "wall"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            timer_for("cuda")


def test_pinned_threads_restores() -> None:
    before = torch.get_num_threads()
    with pinned_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with pinned_threads(None) as n:  # None: left as it is
        assert n == before == torch.get_num_threads()
    with pytest.raises(ValueError, match="positive integer"):
        with pinned_threads(0):
            pass
    assert torch.get_num_threads() == before


def test_records_json_round_trip() -> None:
    import json

    clock = FakeClock()
    res = time_paired(workload(clock, [3.0, 2.0]), workload(clock, [1.0]), warmup=1, min_time=0, min_pairs=2,
                  clock=clock)
    again = PairedResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert again == res
    s = summarize([1.0])
    assert math.isnan(s.cv) is False and LatencyStats.from_dict(s.to_dict()) == s


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_events() -> None:
    x = torch.randn(512, 512, device="cuda")
    stats = measure(lambda: x @ x, warmup=2, min_time=0, min_iters=5, timer=timer_for("cuda"))
    assert stats.n == 5 and stats.median > 0


def test_running_precision_matches_a_t_interval_over_block_medians() -> None:
    from prunebench.bench.blocks import PairedBlocks
    from prunebench.bench.stats import t_quantile

    clock = FakeClock()
    rng = np.random.default_rng(2)
    noise = list(2.0 * (1 + 0.02 * rng.standard_normal(400)))
    pb = PairedBlocks(workload(clock, noise), workload(clock, [1.0]), WallTimer(clock), clock=clock)
    assert pb.rel_half_width(0.95) == math.inf
    for _ in range(12):
        pb.block(4)
    logs = [float(np.median(np.log(b))) for b in pb.blocks]
    half = t_quantile(0.975, 11) * float(np.std(logs, ddof=1)) / math.sqrt(12)
    assert pb.rel_half_width(0.95) == pytest.approx(math.expm1(half), rel=1e-9)
    assert pb.n_blocks == 12 and pb.n_pairs == 48 and all(len(b) == 4 for b in pb.blocks)
