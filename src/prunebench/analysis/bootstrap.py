"""The paired bootstrap: confidence intervals for accuracy differences between two models on the same predictions.

Every model of a run (and of a search) is scored on identical, seeded predictions, so a difference of two
accuracies is a mean of paired differences, and what both models get right or wrong alike cancels.

One algorithm, used by the run's analysis, the Hugging Face evaluator and the search:

    unit        the *example*: a sequence with all of its predictions (``sizes``: predictions per sequence,
                consecutive in evaluation order, e.g. the masked tokens of one MLM row), or one prediction
                each when no grouping is given (a classifier scores one prediction per example).
                Tokens of one sequence are not independent, so they are resampled together: resampling
                tokens would give an interval that is too narrow.
    resample    the nonparametric bootstrap: ``G`` examples drawn with replacement from the ``G`` examples
                (multinomial counts), ``resamples`` times, from ``numpy.random.default_rng(seed)``.
    statistic   accuracy as a ratio of sums: ``sum(count * hits difference) / sum(count * predictions)``,
                so an example with more predictions weighs more, exactly as in the point estimate.
    interval    the percentile interval at ``level`` (default 95%).

Examples where both models agree add nothing to the numerator, and examples of equal size add the same to
the denominator, so the draw is made over the differing examples one by one and the rest lumped per size
(merging multinomial categories is exact): the cost is ``resamples x (differing examples + sizes)``, not
``resamples x G``. A difference whose interval holds 0 reads "no measurable change".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
NO_CHANGE = "no measurable change"
#: Resamples drawn at once by the index-based bootstraps (bounds their memory at ``chunk x n`` indices).
_MAX_CELLS = 4_000_000


@dataclass(frozen=True)
class DeltaCI:
    """A paired difference ``new - ref`` with its bootstrap interval (fractions, not percent).

    Attributes:
        delta: the point estimate on all examples.
        low, high: the percentile interval at ``level``.
        n: examples resampled (sequences when predictions were grouped); ``resamples`` and ``seed`` fix the
            interval exactly.
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


def _check(resamples: int, level: float) -> None:
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100 for a 95% percentile interval, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return float(low), float(high)


def _examples(ref: np.ndarray, new: np.ndarray, sizes: Sequence[int] | np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Per example: (sum of ``new - ref`` over its predictions [G], its prediction count [G])."""
    if ref.shape != new.shape or ref.ndim != 1:
        raise ValueError(f"per-prediction arrays must be 1-D and equally long, got {ref.shape} and {new.shape}")
    diff = new - ref  # [N]
    if sizes is None:
        return diff, np.ones_like(diff)
    cnt = np.asarray(sizes, dtype=np.int64)  # [G]
    if cnt.ndim != 1 or (cnt < 0).any() or int(cnt.sum()) != diff.size:
        raise ValueError(f"sizes must be non-negative predictions per example summing to {diff.size}, "
                         f"got {cnt.size} sizes summing to {int(cnt.sum())}")
    owner = np.repeat(np.arange(cnt.size), cnt)  # [N] example of each prediction
    return np.bincount(owner, weights=diff, minlength=cnt.size), cnt.astype(np.float64)


def paired_delta_ci(
    ref: np.ndarray | Sequence[float],
    new: np.ndarray | Sequence[float],
    sizes: np.ndarray | Sequence[int] | None = None,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> DeltaCI:
    """CI of ``accuracy(new) - accuracy(ref)`` from per-prediction correctness on the same predictions.

    Args:
        ref, new: [N] correctness (0/1) of each prediction, in the same order for both models.
        sizes: [G] predictions per example (consecutive runs of ``ref``/``new``, summing to N): examples are
            resampled whole; None: every prediction is its own example.
        resamples, level, seed: the bootstrap (see the module docstring); a seed gives the same interval.

    Raises:
        ValueError: mismatched lengths or sizes, no predictions, too few resamples or a level outside (0, 1).
    """
    _check(resamples, level)
    a, b = np.asarray(ref, dtype=np.float64), np.asarray(new, dtype=np.float64)
    diff, cnt = _examples(a, b, sizes)  # [G], [G]
    if cnt.sum() <= 0:
        raise ValueError("no predictions to compare")
    delta = float(diff.sum() / cnt.sum())
    differ = np.flatnonzero(diff)  # examples the two models score differently
    rest = np.ones(cnt.size, dtype=bool)
    rest[differ] = False
    lump_sizes, lump_n = np.unique(cnt[rest], return_counts=True)  # the agreeing examples, per size
    # Multinomial counts of G draws over [each differing example, each lump]: the same distribution as drawing
    # every example, since merging categories of a multinomial is exact.
    pvals = np.concatenate([np.ones(differ.size), lump_n]) / cnt.size
    draws = np.random.default_rng(seed).multinomial(cnt.size, pvals, size=resamples)  # [R, K]
    num = draws[:, : differ.size] @ diff[differ]  # [R]
    den = draws @ np.concatenate([cnt[differ], lump_sizes])  # [R]
    stats = num / np.maximum(den, 1e-12)  # a resample of empty examples only reads 0, not NaN
    low, high = _interval(stats, level)
    return DeltaCI(delta, low, high, int(cnt.size), level, resamples, seed)


def _index_resamples(n: int, resamples: int, seed: int) -> list[np.ndarray]:
    """The bootstrap's example indices, [chunk, n] at a time (same draws as one [resamples, n] array)."""
    if n <= 0:
        raise ValueError("a bootstrap needs at least one example")
    rng = np.random.default_rng(seed)
    step = max(1, _MAX_CELLS // n)
    return [rng.integers(0, n, size=(min(step, resamples - s), n)) for s in range(0, resamples, step)]


def paired_stat_ci(
    stat: Callable[[np.ndarray], float],
    ref_stat: Callable[[np.ndarray], float],
    n: int,
    *,
    resamples: int = 1000,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> DeltaCI:
    """CI of ``stat(idx) - ref_stat(idx)`` for a metric that is no mean of predictions (e.g. macro-F1).

    The same resampling of examples as :func:`paired_delta_ci`, by explicit indices (the metric needs them).

    Args:
        stat, ref_stat: the new and the reference model's metric on the examples ``idx`` [N] (with repeats).
        n: number of examples.
    """
    _check(resamples, level)
    stats = np.array([stat(row) - ref_stat(row) for chunk in _index_resamples(n, resamples, seed) for row in chunk])
    low, high = _interval(stats, level)
    everything = np.arange(n)
    return DeltaCI(float(stat(everything) - ref_stat(everything)), low, high, n, level, resamples, seed)


def mean_ci(
    values: np.ndarray | Sequence[float], *, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high) of per-example values (e.g. embedding cosine to dense), resampling examples."""
    _check(resamples, level)
    v = np.asarray(values, dtype=np.float64)
    means = np.concatenate([v[idx].mean(axis=1) for idx in _index_resamples(v.size, resamples, seed)])  # [R]
    low, high = _interval(means, level)
    return float(v.mean()), low, high
