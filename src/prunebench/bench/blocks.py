"""Paired timing accumulated in blocks: the unit that both :func:`time_paired` and the sweep schedule.

A block is a few interleaved rounds of baseline (A) and candidate (B) calls. Rounds alternate ``ABBA`` and
``BAAB`` and the first round of each block alternates too, so neither side is systematically the first call
after a pause (a stopping check, a switch to another cell): a disturbance at a block boundary lands on each
side equally often. The sweep visits its cells round-robin, one block at a time, so one cell's blocks are
spread over the whole sweep and the machine's drift shows up *between* its blocks, where the block bootstrap
(:func:`~prunebench.bench.stats.block_bootstrap_median_ci`) puts it into the interval.

The stopping rule reads a running summary of the blocks (each block's median log-ratio, Welford mean and
variance): O(1) per check, whatever the number of pairs, instead of a bootstrap inside the loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from prunebench.bench.records import PairedResult
from prunebench.bench.stats import block_bootstrap_median_ci, summarize, t_quantile

Clock = Callable[[], float]
#: Runs a callable once and returns its duration in seconds (see :class:`prunebench.bench.timing.Timer`).
TimerFn = Callable[[Callable[[], Any]], float]

#: The interleaving of every result made here.
ORDER = "ABBA/BAAB"


class PairedBlocks:
    """Paired, interleaved timing of one (baseline, candidate) pair, one round or block at a time.

    Args:
        baseline_fn, candidate_fn: the two calls, inputs pre-built.
        timer: times one call (wall clock or CUDA events).
        clock: the budget clock (seconds spent here, warm-up included, are :attr:`spent_s`).
        warmup: untimed calls per side before the first block; the first call's time is kept apart.
        block_warmup: untimed calls per side at the start of every later block (after another cell ran,
            caches hold the other cell's weights).
        calls_per_sample: calls averaged into each timed sample.
    """

    def __init__(self, baseline_fn: Callable[[], Any], candidate_fn: Callable[[], Any], timer: TimerFn, *,
                 clock: Clock = time.perf_counter, warmup: int = 1, block_warmup: int = 0,
                 calls_per_sample: int = 1) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (the first call is never timed as steady state), got {warmup}")
        self.fns = {"A": baseline_fn, "B": candidate_fn}
        self.timer, self.clock = timer, clock
        self.warmup, self.block_warmup, self.calls = warmup, block_warmup, calls_per_sample
        self.a: list[float] = []
        self.b: list[float] = []
        #: per-pair ratios grouped by block (the open block is the last one).
        self.blocks: list[list[float]] = []
        self.first_a: float | None = None
        self.first_b: float | None = None
        self.spent_s = 0.0
        #: blocks timed and then dropped by :meth:`discard_block`.
        self.discarded = 0
        self._open = False
        self._warmed_now = False
        self._rounds_in_block = 0
        # Welford accumulators over closed blocks' median log-ratios.
        self._n, self._mean, self._m2 = 0, 0.0, 0.0

    @property
    def n_pairs(self) -> int:
        """Pairs timed so far."""
        return len(self.a)

    @property
    def block_open(self) -> bool:
        """Whether a block is being timed (its pairs are not yet in the running summary)."""
        return self._open

    @property
    def n_blocks(self) -> int:
        """Blocks started so far (discarded ones not counted)."""
        return len(self.blocks)

    def _sample(self, side: str) -> float:
        fn = self.fns[side]
        return sum(self.timer(fn) for _ in range(self.calls)) / self.calls

    def warm(self) -> None:
        """The initial warm-up (``warmup`` calls per side, the first timed apart); once, then a no-op."""
        if self.first_a is not None:
            return
        self.first_a, self.first_b = self.timer(self.fns["A"]), self.timer(self.fns["B"])
        for _ in range(self.warmup - 1):
            self.timer(self.fns["A"])
            self.timer(self.fns["B"])
        self._warmed_now = True

    def _start_block(self) -> None:
        if self.first_a is None or self._warmed_now:
            self.warm()
            self._warmed_now = False
        else:
            # Warm-up order alternates with the block: the same side is not always the one warmed last.
            sides = ("A", "B") if len(self.blocks) % 2 == 0 else ("B", "A")
            for _ in range(self.block_warmup):
                for side in sides:
                    self.timer(self.fns[side])
        self.blocks.append([])
        self._open, self._rounds_in_block = True, 0

    def round(self) -> None:
        """Time one round (two pairs) into the open block, opening a block first if none is open."""
        start = self.clock()
        if not self._open:
            self._start_block()
        flip = (self._rounds_in_block + len(self.blocks) - 1) % 2 == 1
        if not flip:  # A B B A
            a1, b1, b2, a2 = self._sample("A"), self._sample("B"), self._sample("B"), self._sample("A")
        else:  # B A A B
            b1, a1, a2, b2 = self._sample("B"), self._sample("A"), self._sample("A"), self._sample("B")
        self._rounds_in_block += 1
        self.a += [a1, a2]
        self.b += [b1, b2]
        self.blocks[-1] += [_ratio(a1, b1), _ratio(a2, b2)]
        self.spent_s += self.clock() - start

    def close_block(self) -> None:
        """End the open block and fold its median log-ratio into the running summary (O(block size))."""
        if not self._open:
            return
        self._open = False
        ratios = np.asarray(self.blocks[-1], dtype=float)  # [pairs in block]
        with np.errstate(divide="ignore", invalid="ignore"):
            x = float(np.median(np.log(ratios)))
        if not math.isfinite(x):
            return
        self._n += 1
        delta = x - self._mean
        self._mean += delta / self._n
        self._m2 += delta * (x - self._mean)

    def block(self, pairs: int) -> None:
        """Time one whole block of ``pairs`` pairs (rounded up to whole rounds) and close it."""
        self.time_block(pairs)
        self.close_block()

    def time_block(self, pairs: int) -> None:
        """Time one whole block of ``pairs`` pairs (rounded up to whole rounds) and leave it open, so that the
        caller can still :meth:`discard_block` it (timed while the machine was busy) or :meth:`close_block` it."""
        for _ in range(max(1, math.ceil(pairs / 2))):
            self.round()

    def discard_block(self) -> None:
        """Drop the open block: its pairs leave the samples, the ratios and the running summary as if it had
        never been timed (its time stays in :attr:`spent_s`), and the next block is timed in the same order
        (ABBA or BAAB) as the dropped one. Counted in :attr:`discarded`."""
        if not self._open:
            return
        n = len(self.blocks.pop())
        if n:
            del self.a[-n:], self.b[-n:]
        self._open = False
        self.discarded += 1

    def rel_half_width(self, confidence: float) -> float:
        """Relative half-width of the speedup's CI from the closed blocks (a t-interval on their log-ratios);
        inf with fewer than two blocks. O(1): the stopping rule may call it after every block."""
        if self._n < 2:
            return math.inf
        sd = math.sqrt(self._m2 / (self._n - 1))
        half = t_quantile(0.5 + confidence / 2, self._n - 1) * sd / math.sqrt(self._n)
        return math.expm1(half)

    def result(self, *, confidence: float, n_boot: int, seed: int, stop_reason: str,
               threads: int | None, timer_kind: str) -> PairedResult:
        """The paired result: median ratio over all pairs with the block-bootstrap CI, both sides' statistics."""
        self.close_block()
        speedup, low, high = block_bootstrap_median_ci(self.blocks, confidence, n_boot, seed)
        common = {"warmup": self.warmup, "calls_per_sample": self.calls, "threads": threads, "timer": timer_kind}
        return PairedResult(
            speedup=speedup, ci_low=low, ci_high=high, confidence=confidence,
            ratios=[r for blk in self.blocks for r in blk], order=ORDER, n_boot=n_boot, seed=seed,
            baseline=summarize(self.a, first_call_s=self.first_a, **common),
            candidate=summarize(self.b, first_call_s=self.first_b, **common),
            stop_reason=stop_reason, block_sizes=[len(blk) for blk in self.blocks],
        )


def _ratio(a: float, b: float) -> float:
    """baseline/candidate; a zero candidate time (fake clocks) gives inf, not a crash."""
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b
