"""Accuracy differences with their noise: a paired bootstrap over the evaluated predictions.

Every variant is scored on the same seeded predictions (see ``tasks.evaluation``), whose per-prediction
correctness is stored with the evaluation. The difference of two accuracies is then a mean of paired
differences, and its bootstrap interval tells whether it is measurable: a difference whose interval holds 0
reads "no measurable change" in the verdict, the summary table and the Pareto front.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from prunebench.results.correctness import unpack_correct

#: Accuracy verdicts of a variant against dense.
ACCURACY_VERDICTS = ("more accurate", "less accurate", "no measurable change", "n/a")
NO_CHANGE = "no measurable change"


def paired_bootstrap_delta_ci(
    candidate: Sequence[float], reference: Sequence[float], confidence: float = 0.95, n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of ``candidate - reference`` over paired items (e.g. per-prediction correctness) and its CI.

    Both sides are resampled together, so what both models get right or wrong alike cancels: only the items
    where they differ move the interval.

    Returns:
        ``(delta, low, high)``.
    """
    a, b = np.asarray(candidate, dtype=float), np.asarray(reference, dtype=float)  # [n], [n]
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two non-empty paired sequences of one length, got {a.size} and {b.size}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    diff = a - b  # [n]
    delta = float(diff.mean())
    nz = np.flatnonzero(diff)
    if nz.size == 0:
        return delta, delta, delta
    rng = np.random.default_rng(seed)
    # Poisson bootstrap: each item is drawn Poisson(1) times, the large-n limit of the multinomial resample.
    # Items where both sides agree add 0 whatever their count, so only the differing ones are drawn: the
    # cost is O(n_boot x differing items), not O(n_boot x n).
    counts = rng.poisson(1.0, size=(n_boot, nz.size))  # [n_boot, nnz]
    means = (counts * diff[nz]).sum(axis=1) / a.size  # [n_boot]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return delta, float(low), float(high)


def correctness(evaluation: Mapping[str, Any] | None) -> tuple[np.ndarray, tuple[Any, ...]] | None:
    """(per-prediction 0/1, what must match for two of them to pair up) of a stored evaluation, or None."""
    details = (evaluation or {}).get("details") or {}
    packed, n = details.get("correct"), details.get("n_predictions")
    if not packed or not n:
        return None
    try:
        bits = unpack_correct(packed, int(n))
    except ValueError:
        return None
    return bits, (details.get("task_key"), details.get("split"), details.get("seed"), int(n))


def delta_ci(candidate: Mapping[str, Any] | None, reference: Mapping[str, Any] | None,
             confidence: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """The paired-bootstrap CI of ``candidate`` accuracy minus ``reference`` accuracy (fractions), or None
    when either evaluation lacks per-prediction correctness or they scored different predictions."""
    a, b = correctness(candidate), correctness(reference)
    if a is None or b is None or a[1] != b[1]:
        return None
    _, low, high = paired_bootstrap_delta_ci(a[0], b[0], confidence, seed=seed)
    return low, high


def accuracy_verdict(low: float | None, high: float | None) -> str:
    """``more accurate`` / ``less accurate`` when the CI of the difference excludes 0, else no measurable change."""
    if low is None or high is None:
        return "n/a"
    if low > 0:
        return "more accurate"
    if high < 0:
        return "less accurate"
    return NO_CHANGE


def measurably_better(evaluations: Mapping[str, Mapping[str, Any]],
                      accuracy: Mapping[str, float]) -> Callable[[str, str], bool]:
    """``better(q, p)``: is q measurably more accurate than p? The paired CI where both have per-prediction
    correctness, the plain comparison of accuracies otherwise."""
    cache: dict[tuple[str, str], bool] = {}

    def better(q: str, p: str) -> bool:
        if (q, p) not in cache:
            ci = delta_ci(evaluations.get(q), evaluations.get(p))
            cache[(q, p)] = accuracy[q] > accuracy[p] if ci is None else ci[0] > 0
        return cache[(q, p)]

    return better


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``p`` over ``n`` trials."""
    if n <= 0:
        return (math.nan, math.nan)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def accuracy_ci(evaluation: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """The 95% Wilson interval of a stored evaluation's accuracy over its ``n_predictions``, or None."""
    if not evaluation or evaluation.get("accuracy") is None:
        return None
    n = ((evaluation.get("details") or {}).get("n_predictions")) or evaluation.get("n_predictions")
    if not n:
        return None
    return wilson(float(evaluation["accuracy"]), int(n))


def indistinct_from_trivial(evaluation: Mapping[str, Any] | None) -> bool:
    """Whether an evaluation's accuracy CI reaches its trivial baseline (always the most frequent answer, on the
    same predictions): a model that has learned too little for any accuracy difference to mean a loss."""
    ci = accuracy_ci(evaluation)
    trivial = (evaluation or {}).get("trivial_accuracy")
    return ci is not None and trivial is not None and ci[0] <= float(trivial)
