"""Paired bootstrap CIs of accuracy deltas, and the numpy macro-F1 used inside them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunebench.tasks.evaluation import _macro_f1
from prunebench.tasks.paired_ci import NO_CHANGE, macro_f1, mean_ci, paired_delta_ci, paired_stat_ci


def test_identical_predictions_read_no_measurable_change():
    hits = np.random.default_rng(0).integers(0, 2, 500)
    ci = paired_delta_ci(hits, hits)
    assert (ci.delta, ci.low, ci.high) == (0.0, 0.0, 0.0)
    assert not ci.measurable
    assert ci.describe().startswith(NO_CHANGE)


def test_a_clear_loss_is_measurable_and_its_interval_holds_the_estimate():
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 2, 1000)
    new = ref.copy()
    new[rng.choice(1000, 100, replace=False)] = 0  # at most 100 hits lost, 0 gained
    ci = paired_delta_ci(ref, new)
    assert ci.measurable and ci.high < 0
    assert ci.low <= ci.delta <= ci.high
    assert ci.delta == pytest.approx(new.mean() - ref.mean())
    assert ci.describe().startswith(f"{ci.delta * 100:+.1f} pp")


def test_small_symmetric_noise_is_not_measurable():
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 2, 400)
    new = ref.copy()
    flip = rng.choice(400, 6, replace=False)
    new[flip] = 1 - new[flip]
    ci = paired_delta_ci(ref, new)
    assert ci.low < 0 < ci.high and not ci.measurable


def test_pairing_is_narrower_than_independent_intervals():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 2, 600)
    new = ref.copy()
    new[:30] = 0
    paired = paired_delta_ci(ref, new)
    shuffled = paired_delta_ci(ref, rng.permutation(new))  # pairing destroyed
    assert paired.high - paired.low < (shuffled.high - shuffled.low) / 3


def test_cluster_counts_give_the_ratio_of_sums_and_a_fixed_seed_a_fixed_interval():
    ref, new, counts = np.array([3, 1, 4, 0]), np.array([2, 1, 4, 1]), np.array([5, 2, 6, 3])
    ci = paired_delta_ci(ref, new, counts, seed=7)
    assert ci.delta == pytest.approx((8 - 8) / 16)
    assert ci == paired_delta_ci(ref, new, counts, seed=7)
    with pytest.raises(ValueError, match="equally long"):
        paired_delta_ci(ref, new[:2])
    with pytest.raises(ValueError, match="resamples"):
        paired_delta_ci(ref, new, resamples=10)


def test_generic_statistic_and_mean_interval():
    y = np.array([0, 1, 1, 0, 1, 0, 1, 1] * 20)
    pred = y.copy()
    ci = paired_stat_ci(lambda i: macro_f1(pred[i], y[i], 2), lambda i: macro_f1(y[i], y[i], 2), len(y))
    assert (ci.delta, ci.low, ci.high) == (0.0, 0.0, 0.0)
    mean, low, high = mean_ci(np.linspace(0.5, 1.0, 200))
    assert low < mean < high and mean == pytest.approx(0.75)


def test_numpy_macro_f1_matches_the_evaluation_one():
    rng = np.random.default_rng(4)
    for _ in range(5):
        y, p = rng.integers(0, 4, 80), rng.integers(0, 4, 80)
        assert macro_f1(p, y, 4) == pytest.approx(_macro_f1(torch.from_numpy(p), torch.from_numpy(y), 4))
