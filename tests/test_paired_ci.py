"""The one paired bootstrap (analysis.bootstrap): per prediction, or sequences resampled whole; and macro-F1."""

from __future__ import annotations

import numpy as np
import pytest

from prunebench.analysis.accuracy import delta_ci
from prunebench.analysis.bootstrap import NO_CHANGE, mean_ci, paired_delta_ci, paired_stat_ci
from prunebench.results.correctness import pack_correct
from prunebench.tasks.evaluation import macro_f1


def test_identical_predictions_read_no_measurable_change():
    hits = np.random.default_rng(0).integers(0, 2, 500)
    ci = paired_delta_ci(hits, hits)
    assert (ci.delta, ci.low, ci.high) == (0.0, 0.0, 0.0)
    assert not ci.measurable
    assert ci.describe().startswith(NO_CHANGE)
    assert paired_delta_ci(hits, hits, [5] * 100) == paired_delta_ci(hits, hits, [5] * 100)


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


def _naive(ref: np.ndarray, new: np.ndarray, sizes: list[int], resamples: int, seed: int) -> tuple[float, float]:
    """The textbook cluster bootstrap: draw G sequences by index, ratio of sums, percentile interval."""
    owner = np.repeat(np.arange(len(sizes)), sizes)
    d = np.bincount(owner, weights=new.astype(float) - ref, minlength=len(sizes))
    n = np.asarray(sizes, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(sizes), (resamples, len(sizes)))
    stats = d[idx].sum(1) / n[idx].sum(1)
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


def _correlated_sequences(seed: int = 4) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """200 sequences of 5-30 masked tokens; the pruned model loses whole sequences (tokens move together)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 31, 200).tolist()
    ref = (rng.random(sum(sizes)) < 0.6).astype(np.uint8)
    lost = np.repeat(rng.random(200) < 0.06, sizes)  # 6% of sequences lose every token
    gained = np.repeat(rng.random(200) < 0.05, sizes)  # 5% get every token right
    new = np.where(lost, 0, np.where(gained, 1, ref)).astype(np.uint8)
    return ref, new, sizes


def test_sequences_are_resampled_whole_and_exactly_as_the_textbook_cluster_bootstrap():
    ref, new, sizes = _correlated_sequences()
    tokens = paired_delta_ci(ref, new)
    seqs = paired_delta_ci(ref, new, sizes, resamples=4000)
    assert seqs.delta == pytest.approx(tokens.delta) == pytest.approx(float(new.mean()) - float(ref.mean()))
    assert seqs.n == 200 and tokens.n == len(ref)
    # Tokens of one sequence move together: treating them as independent makes the interval far too narrow
    # (here it would call a change measurable that the sequences do not support).
    assert (seqs.high - seqs.low) > 2.5 * (tokens.high - tokens.low)
    assert tokens.measurable and not seqs.measurable
    # Drawing differing sequences one by one and lumping the agreeing ones per size is the same bootstrap.
    low, high = _naive(ref, new, sizes, 4000, seed=11)
    width = high - low
    assert abs(seqs.low - low) < 0.1 * width and abs(seqs.high - high) < 0.1 * width


def test_sizes_are_checked_and_a_fixed_seed_gives_a_fixed_interval():
    ref, new = np.array([1, 1, 0, 1, 0, 1]), np.array([1, 0, 0, 1, 1, 1])
    ci = paired_delta_ci(ref, new, [2, 0, 3, 1], seed=7)
    assert ci.delta == pytest.approx(0.0) and ci.n == 4
    assert ci == paired_delta_ci(ref, new, [2, 0, 3, 1], seed=7)
    with pytest.raises(ValueError, match="summing to 6"):
        paired_delta_ci(ref, new, [2, 2])
    with pytest.raises(ValueError, match="equally long"):
        paired_delta_ci(ref, new[:2])
    with pytest.raises(ValueError, match="resamples"):
        paired_delta_ci(ref, new, resamples=10)


def test_stored_evaluations_pair_up_with_their_sequences():
    """The report's accuracy CI (analysis.accuracy.delta_ci) is the same bootstrap, over stored records."""
    ref, new, sizes = _correlated_sequences()

    def record(bits: np.ndarray, cluster_sizes: list[int] | None) -> dict:
        return {"details": {"correct": pack_correct(list(bits)), "n_predictions": bits.size, "task_key": "t",
                            "split": "test", "seed": 0, "cluster_sizes": cluster_sizes}}

    ci = paired_delta_ci(ref, new, sizes)
    assert delta_ci(record(new, sizes), record(ref, sizes)) == (ci.low, ci.high)
    assert delta_ci(record(new, sizes), record(ref, None)) == (ci.low, ci.high)  # an older record: same predictions
    assert delta_ci(record(new, sizes), record(ref, sizes[::-1])) is None  # not the same predictions


def test_generic_statistic_and_mean_interval():
    y = np.array([0, 1, 1, 0, 1, 0, 1, 1] * 20)
    pred = y.copy()
    ci = paired_stat_ci(lambda i: macro_f1(pred[i], y[i], 2), lambda i: macro_f1(y[i], y[i], 2), len(y))
    assert (ci.delta, ci.low, ci.high) == (0.0, 0.0, 0.0)
    worse = y.copy()
    worse[:40] = 1 - worse[:40]
    ci = paired_stat_ci(lambda i: macro_f1(worse[i], y[i], 2), lambda i: macro_f1(y[i], y[i], 2), len(y))
    assert ci.high < 0 and ci.low <= ci.delta <= ci.high
    mean, low, high = mean_ci(np.linspace(0.5, 1.0, 200))
    assert low < mean < high and mean == pytest.approx(0.75)


def test_macro_f1_against_hand_computed_values():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 0, 2])
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 0 -> 0.8; class 2: tp 1 fp 0 fn 1 -> 2/3
    assert macro_f1(p, y, 4) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # class 3 never occurs: not averaged
    assert macro_f1(y, y, 3) == 1.0
