"""Accuracy differences with their noise: the paired bootstrap over the evaluated predictions.

Every variant is scored on the same seeded predictions (see ``tasks.evaluation``), whose per-prediction
correctness is stored with the evaluation (with the predictions per sequence where one sequence holds
several, as an MLM row does). The difference of two accuracies then gets the paired bootstrap interval of
:func:`prunebench.analysis.bootstrap.paired_delta_ci` (sequences resampled whole), and a difference whose
interval holds 0 reads "no measurable change" in the verdict, the summary table and the Pareto front.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from prunebench.analysis.bootstrap import NO_CHANGE, paired_delta_ci
from prunebench.results.correctness import unpack_correct

#: Fewer scored predictions than this and an evaluation measures nothing: the verdict says so instead. (A
#: masked-LM read through a tokenizer that knows none of the text's words scored 27 masked tokens, and its
#: "no measurable change" hid a variant at 0% against dense 11%.)
MIN_PREDICTIONS = 200
#: The verdict of an evaluation below :data:`MIN_PREDICTIONS`.
TOO_FEW = "too few predictions"
#: The verdict when dense scores below the trivial baseline: the task does not fit the model.
UNFIT = "task does not fit the model"
#: Accuracy verdicts of a variant against dense.
ACCURACY_VERDICTS = ("more accurate", "less accurate", NO_CHANGE, TOO_FEW, UNFIT, "n/a")


def correctness(evaluation: Mapping[str, Any] | None
                ) -> tuple[np.ndarray, tuple[Any, ...], list[int] | None] | None:
    """(per-prediction 0/1, what must match for two of them to pair up, predictions per sequence or None) of
    a stored evaluation, or None when it holds no usable correctness."""
    details = (evaluation or {}).get("details") or {}
    packed, n = details.get("correct"), details.get("n_predictions")
    if not packed or not n:
        return None
    try:
        bits = unpack_correct(packed, int(n))
    except ValueError:
        return None
    sizes = details.get("cluster_sizes")
    key = (details.get("task_key"), details.get("split"), details.get("seed"), int(n))
    return bits, key, None if sizes is None else [int(k) for k in sizes]


def delta_ci(candidate: Mapping[str, Any] | None, reference: Mapping[str, Any] | None,
             confidence: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """The paired-bootstrap CI of ``candidate`` accuracy minus ``reference`` accuracy (fractions), or None
    when either evaluation lacks per-prediction correctness or they scored different predictions.

    Sequences are resampled whole when either record says how many predictions each holds (the same seeded
    predictions have the same grouping, so one record saying it is enough; records that disagree did not
    score the same predictions). Older records without it are resampled per prediction.
    """
    a, b = correctness(candidate), correctness(reference)
    if a is None or b is None or a[1] != b[1]:
        return None
    if a[2] is not None and b[2] is not None and a[2] != b[2]:
        return None
    ci = paired_delta_ci(b[0], a[0], a[2] if a[2] is not None else b[2], level=confidence, seed=seed)
    return ci.low, ci.high


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


def n_predictions(evaluation: Mapping[str, Any] | None) -> int | None:
    """How many predictions a stored evaluation scored (None: it does not say)."""
    n = ((evaluation or {}).get("details") or {}).get("n_predictions") or (evaluation or {}).get("n_predictions")
    return None if n is None else int(n)


def too_few_predictions(evaluation: Mapping[str, Any] | None, floor: int = MIN_PREDICTIONS) -> bool:
    """Whether an evaluation scored fewer than ``floor`` predictions (one that does not say is not judged)."""
    n = n_predictions(evaluation)
    return n is not None and n < floor


def below_trivial(evaluation: Mapping[str, Any] | None) -> bool:
    """Whether an evaluation's accuracy is below its trivial baseline (always the most frequent answer): for
    the dense model, the task does not fit it (a pretrained model read through text its tokenizer or head was
    not made for), so no variant's accuracy on it means anything."""
    acc, trivial = (evaluation or {}).get("accuracy"), (evaluation or {}).get("trivial_accuracy")
    return acc is not None and trivial is not None and float(acc) < float(trivial)


def accuracy_ci(evaluation: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """The 95% Wilson interval of a stored evaluation's accuracy over its ``n_predictions``, or None."""
    if not evaluation or evaluation.get("accuracy") is None:
        return None
    n = n_predictions(evaluation)
    if not n:
        return None
    return wilson(float(evaluation["accuracy"]), n)


def indistinct_from_trivial(evaluation: Mapping[str, Any] | None) -> bool:
    """Whether an evaluation's accuracy CI reaches its trivial baseline (always the most frequent answer, on the
    same predictions): a model that has learned too little for any accuracy difference to mean a loss."""
    ci = accuracy_ci(evaluation)
    trivial = (evaluation or {}).get("trivial_accuracy")
    return ci is not None and trivial is not None and ci[0] <= float(trivial)
