"""Latency measurement that survives a noisy, shared machine.

Two tools:

* :func:`measure` times one callable: warm-up calls (the first one's time kept apart), then timed calls
  until both a minimum duration and a minimum count are reached, bounded by a maximum count and time.
* :func:`time_paired` times a baseline and a candidate **paired and interleaved** (ABBA/BAAB) and reports
  the median of the per-pair ratios baseline/candidate (the speedup) with a bootstrap confidence
  interval. Because the two calls of a pair run back to back, a slow phase of the machine (another
  process, a lower clock) slows both and cancels in the ratio; two separate loops cannot do that.

Clocks are injected so the logic is tested with a fake clock. On CUDA, :class:`CudaEventTimer` times the
device work with CUDA events (the host returns before the GPU finishes, so wall time would be wrong).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from prunebench.bench.blocks import PairedBlocks
from prunebench.bench.inputs import parse_device
from prunebench.bench.records import LatencyStats, PairedResult
from prunebench.bench.stats import summarize

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class Timer(Protocol):
    """Runs ``fn`` once and returns how long it took, in seconds."""

    kind: str

    def __call__(self, fn: Callable[[], Any]) -> float: ...


class WallTimer:
    """Times a call with a host clock; ``sync`` (if given) runs before and after so queued work is counted.

    Args:
        clock: seconds as a float, monotonic (default ``time.perf_counter``).
        sync: called before starting and before stopping the clock, e.g. ``torch.cuda.synchronize``.
    """

    kind = "wall"

    def __init__(self, clock: Clock = time.perf_counter, sync: Callable[[], None] | None = None) -> None:
        self.clock = clock
        self.sync = sync

    def __call__(self, fn: Callable[[], Any]) -> float:
        if self.sync is not None:
            self.sync()
        start = self.clock()
        fn()
        if self.sync is not None:
            self.sync()
        return self.clock() - start


class CudaEventTimer:
    """Times the GPU work of a call with a pair of CUDA events.

    Args:
        event_factory: makes a timing event (default ``torch.cuda.Event(enable_timing=True)``); tests pass a fake.
        sync: run before recording the start event, so earlier queued work is not billed to this call.
    """

    kind = "cuda-events"

    def __init__(
        self,
        event_factory: Callable[[], Any] | None = None,
        sync: Callable[[], None] | None = None,
    ) -> None:
        self.event_factory = event_factory or (lambda: torch.cuda.Event(enable_timing=True))
        self.sync = sync if sync is not None else torch.cuda.synchronize

    def __call__(self, fn: Callable[[], Any]) -> float:
        start, end = self.event_factory(), self.event_factory()
        self.sync()
        start.record()
        fn()
        end.record()
        end.synchronize()  # wait for the GPU to reach the end event before reading it
        return float(start.elapsed_time(end)) / 1000.0  # elapsed_time is in milliseconds


def timer_for(device: str | torch.device, clock: Clock = time.perf_counter) -> Timer:
    """The right timer for ``device``: CUDA events on an available CUDA device, else the wall clock.

    Raises:
        ValueError: a CUDA device was asked for but CUDA is not available.
    """
    if parse_device(device).type == "cuda":
        return CudaEventTimer()
    return WallTimer(clock)


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[int]:
    """Set ``torch.set_num_threads(threads)`` for the block (None keeps the current value); yields the count."""
    before = torch.get_num_threads()
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads <= 0:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _check_budget(min_time: float, min_iters: int, max_iters: int, max_time: float) -> None:
    if min_time < 0 or max_time <= 0:
        raise ValueError(f"min_time must be >= 0 and max_time > 0, got {min_time} and {max_time}")
    if min_iters < 1 or max_iters < min_iters:
        raise ValueError(f"need 1 <= min_iters <= max_iters, got {min_iters} and {max_iters}")


def _timer(timer: Timer | None, clock: Clock, sync: Callable[[], None] | None) -> Timer:
    return timer if timer is not None else WallTimer(clock, sync)


def _block(timer: Timer, fn: Callable[[], Any], calls: int) -> float:
    """Mean seconds per call over ``calls`` back-to-back calls (blocks beat a coarse timer on fast calls)."""
    return sum(timer(fn) for _ in range(calls)) / calls


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    min_time: float = 1.0,
    min_iters: int = 10,
    max_iters: int = 10_000,
    max_time: float = 30.0,
    calls_per_sample: int = 1,
    clock: Clock = time.perf_counter,
    sync: Callable[[], None] | None = None,
    timer: Timer | None = None,
    threads: int | None = None,
) -> LatencyStats:
    """Time one callable.

    Args:
        fn: the call to time, with its inputs already built (nothing but the call is timed).
        warmup: calls before timing (>= 1); the first one's duration is reported as ``first_call_s``.
        min_time: keep timing until at least this many seconds of ``clock`` have passed ...
        min_iters: ... and at least this many samples were taken;
        max_iters, max_time: hard bounds (checked after each sample; max_time wins over the minimums).
        calls_per_sample: calls averaged into one sample.
        clock: the budget clock, and the timing clock unless ``timer`` is given.
        sync: device synchronization around each timed call (the default wall timer only).
        timer: overrides ``clock``/``sync`` for timing calls (e.g. :class:`CudaEventTimer`).
        threads: ``torch.set_num_threads`` for the duration (restored afterwards); None keeps it.

    Returns:
        Statistics and raw samples, in seconds per call.
    """
    _check_budget(min_time, min_iters, max_iters, max_time)
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 (the first call is never timed as steady state), got {warmup}")
    t = _timer(timer, clock, sync)
    samples: list[float] = []
    with pinned_threads(threads) as n_threads, torch.inference_mode():
        first = t(fn)
        for _ in range(warmup - 1):
            t(fn)
        start = clock()
        while True:
            samples.append(_block(t, fn, calls_per_sample))
            elapsed = clock() - start
            if len(samples) >= max_iters or elapsed >= max_time:
                break
            if len(samples) >= min_iters and elapsed >= min_time:
                break
    return summarize(samples, first_call_s=first, warmup=warmup, calls_per_sample=calls_per_sample,
                     threads=n_threads, timer=t.kind)


def time_paired(
    baseline_fn: Callable[[], Any],
    candidate_fn: Callable[[], Any],
    *,
    warmup: int = 2,
    min_time: float = 1.0,
    min_pairs: int = 10,
    max_pairs: int = 1000,
    max_time: float = 30.0,
    target_ci: float | None = None,
    check_every: int = 4,
    calls_per_sample: int = 1,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    clock: Clock = time.perf_counter,
    sync: Callable[[], None] | None = None,
    timer: Timer | None = None,
    threads: int | None = None,
) -> PairedResult:
    """Paired, interleaved timing of baseline (A) against candidate (B), in one stretch.

    Calls run in rounds that alternate A B B A and B A A B (see :mod:`prunebench.bench.blocks`): each round
    yields two pairs, each side runs first equally often, and the call after a stopping check alternates
    between the sides. Each pair gives a ratio A/B (the speedup); the result is the median ratio with a
    seeded block-bootstrap CI over blocks of ``check_every`` pairs. To spread a comparison over a longer
    stretch of time (and over other comparisons), use :func:`prunebench.bench.sweep.sweep`.

    Args:
        baseline_fn, candidate_fn: the two calls, inputs pre-built.
        warmup: warm-up calls per side (alternating), the first of each kept as ``first_call_s``.
        min_time, min_pairs: timing continues until both are reached;
        max_pairs, max_time: hard bounds, checked after each round.
        target_ci: if set, stop as soon as the minimums are met and the CI half-width relative to the speedup
            is at most this (e.g. 0.02), checked after every block of ``check_every`` pairs with an O(1)
            running estimate; otherwise stop at the minimums.
        calls_per_sample: calls averaged into each sample.
        confidence, n_boot, seed: bootstrap settings.
        clock, sync, timer, threads: as in :func:`measure`.

    Returns:
        The paired result with both sides' latency statistics and the raw per-pair ratios.
    """
    _check_budget(min_time, min_pairs, max_pairs, max_time)
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1, got {warmup}")
    if target_ci is not None and not target_ci > 0:
        raise ValueError(f"target_ci must be positive (a relative CI half-width such as 0.02), got {target_ci}")
    if check_every < 2:
        raise ValueError(f"check_every must be >= 2 (one round is two pairs), got {check_every}")
    t = _timer(timer, clock, sync)
    reason = ""
    with pinned_threads(threads) as n_threads, torch.inference_mode():
        pb = PairedBlocks(baseline_fn, candidate_fn, t, clock=clock, warmup=warmup,
                          calls_per_sample=calls_per_sample)
        pb.warm()
        start = clock()
        while not reason:
            pb.round()
            if len(pb.blocks[-1]) >= check_every:
                pb.close_block()
            elapsed = clock() - start
            if elapsed >= max_time:
                reason = "max_time"
            elif pb.n_pairs >= max_pairs:
                reason = "max_pairs"
            elif pb.n_pairs >= min_pairs and elapsed >= min_time:
                if target_ci is None:
                    reason = "min_reached"
                elif not pb.block_open and pb.rel_half_width(confidence) <= target_ci:
                    reason = "precision"
    result = pb.result(confidence=confidence, n_boot=n_boot, seed=seed, stop_reason=reason, threads=n_threads,
                       timer_kind=t.kind)
    logger.debug("time_paired: %d pairs, speedup %.3f [%.3f, %.3f], stop=%s", result.n_pairs, result.speedup,
                 result.ci_low, result.ci_high, reason)
    return result
