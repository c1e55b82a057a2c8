"""Paired bootstrap confidence intervals for accuracy deltas between two models on the same test examples.

Both models were scored on identical examples, so each bootstrap resample draws *example indices* once
and recomputes both models' metric on them: the per-example pairing cancels the examples' own difficulty
and the interval is much narrower than two independent intervals would suggest. For MLM an "example" is a
test sequence with its masked tokens (a cluster), and accuracy is a ratio of sums, resampled as such.

A delta whose interval holds 0 is reported as "no measurable change" rather than as a number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
NO_CHANGE = "no measurable change"


@dataclass(frozen=True)
class DeltaCI:
    """A paired difference ``new - ref`` with its bootstrap interval (fractions, not percent).

    Attributes:
        delta: the point estimate on all examples.
        low, high: the percentile interval at ``level``.
        n: examples resampled; ``resamples`` and ``seed`` fix the interval exactly.
    """

    delta: float
    low: float
    high: float
    n: int
    level: float = DEFAULT_LEVEL
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0

    @property
    def measurable(self) -> bool:
        """False when the interval holds 0 (the change cannot be told apart from no change)."""
        return not (self.low <= 0.0 <= self.high)

    def describe(self, scale: float = 100.0, unit: str = " pp", digits: int = 1) -> str:
        """``"-1.2 pp [-2.0, -0.4]"``, or ``"no measurable change [-0.8, +0.5]"`` when the CI holds 0."""
        ci = f"[{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}]"
        if not self.measurable:
            return f"{NO_CHANGE} {ci}"
        return f"{self.delta * scale:+.{digits}f}{unit} {ci}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with ``measurable`` spelled out."""
        return {**asdict(self), "measurable": self.measurable}


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    if n <= 0:
        raise ValueError("a bootstrap needs at least one example")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100 for a 95% percentile interval, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # [R, N]


def _interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_delta_ci(
    ref_hits: np.ndarray | list[float],
    new_hits: np.ndarray | list[float],
    counts: np.ndarray | list[float] | None = None,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> DeltaCI:
    """CI of ``accuracy(new) - accuracy(ref)`` from per-example hits on the same examples.

    Args:
        ref_hits, new_hits: [N] correct predictions per example (0/1, or hit counts per cluster).
        counts: [N] predictions per example (MLM: masked tokens per sequence); None means one each.
        resamples, level, seed: the bootstrap; a seed gives the same interval every time.

    Raises:
        ValueError: mismatched lengths, no examples, or no predictions at all.
    """
    ref = np.asarray(ref_hits, dtype=np.float64)
    new = np.asarray(new_hits, dtype=np.float64)
    cnt = np.ones_like(ref) if counts is None else np.asarray(counts, dtype=np.float64)
    if not (ref.shape == new.shape == cnt.shape) or ref.ndim != 1:
        raise ValueError(f"per-example arrays must be 1-D and equally long, got {ref.shape}, {new.shape}, {cnt.shape}")
    if cnt.sum() <= 0:
        raise ValueError("no predictions to compare")
    diff = new - ref  # [N]
    idx = _indices(len(ref), resamples, seed)  # [R, N]
    # A resample with no predictions at all (only possible with tiny clusters) would divide by 0.
    denom = np.maximum(cnt[idx].sum(axis=1), 1e-12)  # [R]
    stats = diff[idx].sum(axis=1) / denom  # [R]
    low, high = _interval(stats, level)
    return DeltaCI(float(diff.sum() / cnt.sum()), low, high, len(ref), level, resamples, seed)


def paired_stat_ci(
    stat: Callable[[np.ndarray], float],
    ref_stat: Callable[[np.ndarray], float],
    n: int,
    *,
    resamples: int = 1000,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> DeltaCI:
    """CI of ``stat(idx) - ref_stat(idx)`` for any metric of a resample ``idx`` (e.g. macro-F1).

    Args:
        stat, ref_stat: the new and the reference model's metric on the examples ``idx`` [N] (with repeats).
        n: number of examples.
    """
    idx = _indices(n, resamples, seed)  # [R, N]
    everything = np.arange(n)
    stats = np.array([stat(row) - ref_stat(row) for row in idx])  # [R]
    low, high = _interval(stats, level)
    return DeltaCI(float(stat(everything) - ref_stat(everything)), low, high, n, level, resamples, seed)


def mean_ci(
    values: np.ndarray | list[float], *, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high) of per-example values (e.g. embedding cosine to dense) by the bootstrap."""
    v = np.asarray(values, dtype=np.float64)
    idx = _indices(len(v), resamples, seed)  # [R, N]
    low, high = _interval(v[idx].mean(axis=1), level)
    return float(v.mean()), low, high


def macro_f1(pred: np.ndarray, target: np.ndarray, num_labels: int) -> float:
    """Mean F1 over the classes present in targets or predictions (numpy; used inside bootstraps)."""
    pairs = np.bincount(target * num_labels + pred, minlength=num_labels * num_labels)
    confusion = pairs.reshape(num_labels, num_labels)  # [true, pred]
    tp = np.diag(confusion).astype(np.float64)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    if not present.any():
        return 0.0
    return float((2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])).mean())
