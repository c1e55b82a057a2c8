"""Greedy group OBS (which groups stay when the output projection is refitted) and its use by the search."""

from __future__ import annotations

import itertools

import pytest
import torch

from prunebench.models.adapters import adapter_for
from prunebench.search import SearchOptions
from prunebench.search._arch import full_widths
from prunebench.search.importance import Importance
from prunebench.search.reconstruct import input_gram, reconstruction_orders, removal_order


def _lstsq_error(x: torch.Tensor, w: torch.Tensor, keep: list[int]) -> float:
    """||X W^T - X_keep W'^T||^2 with W' the least-squares refit on the kept columns alone."""
    y = x @ w.T  # [N, D]
    sol = torch.linalg.lstsq(x[:, keep], y).solution  # [|keep|, D]
    return float(((x[:, keep] @ sol - y) ** 2).sum())


def test_a_duplicated_input_is_removed_first_although_its_weights_are_the_largest():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g, dtype=torch.float64)
    x[:, 5] = x[:, 0]  # column 5 carries exactly what column 0 carries
    w = torch.randn(3, 6, generator=g, dtype=torch.float64) * 0.1
    w[:, 0] += 5.0
    w[:, 5] += 5.0  # by magnitude (or alone, by Fisher) the two copies are the most important inputs
    order = removal_order(w, x.T @ x, 6, damp=1e-6)
    assert order[0] in (0, 5)  # the refit moves its weight onto the twin: removing it costs ~nothing
    assert {0, 5} & set(order[-2:])  # the surviving twin is among the last to go


def test_each_greedy_step_removes_the_group_whose_refit_error_is_smallest():
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(12, 12, generator=g, dtype=torch.float64)
    x = torch.randn(500, 12, generator=g, dtype=torch.float64) @ mix  # correlated inputs
    w = torch.randn(5, 12, generator=g, dtype=torch.float64)
    groups = 4  # "heads" of 3 columns
    order = removal_order(w, x.T @ x, groups, damp=1e-9)
    assert sorted(order) == list(range(groups))
    alive = list(range(groups))
    for removed in order[:-1]:  # brute force: refit on every candidate kept set, pick the least error
        def err(gone: int) -> float:
            cols = [c for h in alive if h != gone for c in range(3 * h, 3 * h + 3)]
            return _lstsq_error(x, w, cols)
        assert removed == min(alive, key=err)
        alive.remove(removed)


def test_orders_cover_every_group_of_every_layer_and_change_what_is_kept(tiny_model):
    adapter = adapter_for(tiny_model)
    g = torch.Generator().manual_seed(2)
    batches = [{"input_ids": torch.randint(1, tiny_model.config.vocab_size, (3, 10), generator=g)} for _ in range(3)]
    orders = reconstruction_orders(tiny_model, batches)
    full = full_widths(adapter)
    for i, (h, f) in enumerate(full):
        assert sorted(orders["heads"][i]) == list(range(h))
        assert sorted(orders["neurons"][i]) == list(range(f))
    grams = input_gram(tiny_model, batches)
    assert grams[("neurons", 0)].shape == (full[0][1], full[0][1])
    n = len(full)
    scores = Importance(tuple(torch.arange(float(h)) for h, _ in full),
                        tuple(torch.arange(float(f)) for _, f in full), "fisher", 1)
    by_obs = Importance(scores.heads, scores.neurons, "fisher", 1, orders=orders)
    assert by_obs.kept("neurons", 0, 3) == tuple(sorted(orders["neurons"][0][:3]))
    assert scores.kept("neurons", 0, 3) == tuple(range(full[0][1] - 3, full[0][1]))  # top scores: the last
    assert any(by_obs.kept("neurons", i, 3) != scores.kept("neurons", i, 3) for i in range(n))  # orders decide
    # retained importance follows the keeping order: its total is unchanged, its first step is that group's score
    for i in range(n):
        r = by_obs.retained("neurons", i)
        assert float(r[-1]) == pytest.approx(float(scores.neurons[i].sum()))
        assert float(r[1]) == pytest.approx(float(scores.neurons[i][orders["neurons"][i][0]]))


def test_keep_defaults_to_obs_with_rescaling_and_rejects_unknown_rules():
    assert SearchOptions(targets=(1.5,)).keep == "obs"
    assert SearchOptions(targets=(1.5,), rescale=False).keep == "score"
    assert SearchOptions(targets=(1.5,), rescale=False, keep="obs").keep == "obs"
    with pytest.raises(ValueError, match="obs, score"):
        SearchOptions(targets=(1.5,), keep="magnitude")


def test_groups_that_do_not_split_evenly_are_refused():
    with pytest.raises(ValueError, match="equal groups"):
        removal_order(torch.ones(2, 5), torch.eye(5), 2)


def test_greedy_order_agrees_with_exhaustive_best_pair_on_a_small_layer():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    w = torch.randn(4, 5, generator=g, dtype=torch.float64)
    order = removal_order(w, x.T @ x, 5, damp=1e-9)
    kept = sorted(order[-2:])
    errs = {pair: _lstsq_error(x, w, list(pair)) for pair in itertools.combinations(range(5), 2)}
    best = min(errs.values())
    # greedy is not guaranteed optimal, but its kept pair is close to the exhaustive best on this layer
    assert errs[tuple(kept)] <= 1.5 * best + 1e-9
