"""Small statistics helpers for latency samples: summaries and a seeded bootstrap CI of the median."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from prunebench.bench.records import LatencyStats


def summarize(
    samples: Sequence[float],
    *,
    first_call_s: float | None = None,
    warmup: int = 0,
    calls_per_sample: int = 1,
    threads: int | None = None,
    timer: str = "wall",
) -> LatencyStats:
    """Statistics of latency samples (seconds); the raw samples are kept in the record.

    Raises:
        ValueError: no samples.
    """
    if len(samples) == 0:
        raise ValueError("cannot summarize zero latency samples")
    x = np.asarray(samples, dtype=float)  # [n]
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    p90, p95, p99 = (float(v) for v in np.percentile(x, [90, 95, 99]))
    return LatencyStats(
        samples=[float(v) for v in x],
        first_call_s=first_call_s,
        warmup=warmup,
        n=int(x.size),
        mean=mean,
        median=float(np.median(x)),
        p90=p90,
        p95=p95,
        p99=p99,
        std=std,
        cv=std / mean if mean > 0 else math.nan,
        min=float(x.min()),
        max=float(x.max()),
        total_s=float(x.sum()),
        calls_per_sample=calls_per_sample,
        threads=threads,
        timer=timer,
    )


def bootstrap_median_ci(
    values: Sequence[float], confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Median of ``values`` and its percentile-bootstrap confidence interval.

    Args:
        values: e.g. per-pair speedup ratios.
        confidence: interval level in (0, 1).
        n_boot: resamples (>= 1).
        seed: seed of the numpy generator, so the same samples always give the same interval.

    Returns:
        ``(median, low, high)``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    x = np.asarray(values, dtype=float)  # [n]
    if x.size == 0:
        raise ValueError("cannot bootstrap zero values")
    median = float(np.median(x))
    if x.size == 1:
        return median, median, median
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))  # [n_boot, n]
    meds = np.median(x[idx], axis=1)  # [n_boot]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(meds, [alpha, 1.0 - alpha])
    return median, float(low), float(high)
