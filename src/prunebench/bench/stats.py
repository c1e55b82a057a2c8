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


def t_quantile(p: float, df: int) -> float:
    """Quantile ``p`` (in (0.5, 1)) of Student's t with ``df`` degrees of freedom.

    Exact for df 1 and 2; otherwise the density is integrated numerically on a fine grid and inverted (to
    ~1e-4), which keeps numpy the only dependency. Cost does not depend on the data: one call per stopping check.
    """
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if not 0.5 < p < 1.0:
        raise ValueError(f"p must lie in (0.5, 1), got {p}")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    x = np.linspace(0.0, 80.0, 40_001)  # [grid]
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    pdf = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))  # [grid]
    cdf = 0.5 + np.concatenate(([0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x))))  # [grid]
    return float(np.interp(p, cdf, x))


def block_bootstrap_median_ci(
    blocks: Sequence[Sequence[float]], confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Median of all values and a two-stage (hierarchical) bootstrap CI that covers between-block variance.

    Each resample draws as many blocks as there are, with replacement, then resamples the values inside each
    drawn block; the statistic is the median of everything drawn. Blocks timed minutes apart differ by the
    machine's drift, so this interval is wider (and honest) where a pooled bootstrap would describe only one
    stretch of time.

    Args:
        blocks: values (e.g. per-pair speedup ratios) grouped by the block they were measured in.
        confidence, n_boot, seed: as in :func:`bootstrap_median_ci`.

    Returns:
        ``(median, low, high)``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    groups = [np.asarray(b, dtype=float) for b in blocks if len(b) > 0]
    if not groups:
        raise ValueError("cannot bootstrap zero values")
    median = float(np.median(np.concatenate(groups)))
    sizes = np.array([g.size for g in groups])  # [nb]
    if sizes.sum() == 1:
        return median, median, median
    nb, kmax = len(groups), int(sizes.max())
    table = np.full((nb, kmax), np.nan)  # [nb, kmax], ragged blocks padded with NaN
    for i, g in enumerate(groups):
        table[i, : g.size] = g
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, nb, size=(n_boot, nb))  # [n_boot, nb] which blocks
    k = sizes[pick]  # [n_boot, nb] their sizes
    col = np.floor(rng.random((n_boot, nb, kmax)) * k[..., None]).astype(int)  # [n_boot, nb, kmax]
    values = table[pick[..., None], col]  # [n_boot, nb, kmax]
    values[np.arange(kmax)[None, None, :] >= k[..., None]] = np.nan  # a block keeps its own size
    meds = np.nanmedian(values.reshape(n_boot, -1), axis=1)  # [n_boot]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(meds, [alpha, 1.0 - alpha])
    return median, float(low), float(high)
