"""Candidate allocations and the held-out choice among them (search/select.py)."""

from __future__ import annotations

import torch

from prunebench.search import Importance, SearchOptions, search_family
from prunebench.search.allocate import uniform_fraction_for, uniform_widths
from prunebench.search.select import CANDIDATES, candidate_allocations, choose_allocation, layer_normalized
from tests.test_search import FAST, _calib, _table


def _lopsided() -> Importance:
    """Layer 0's scores are 100x layer 1's: the raw knapsack strips layer 1, normalization evens them out."""
    g = torch.Generator().manual_seed(3)
    heads = (torch.rand(4, generator=g) * 100, torch.rand(4, generator=g))
    neurons = (torch.rand(32, generator=g) * 25, torch.rand(32, generator=g) / 4)
    return Importance(heads, neurons, "fisher", 1)


def test_layer_normalization_keeps_rankings_and_evens_out_layer_totals():
    imp = _lopsided()
    for alpha in (0.5, 1.0):
        norm = layer_normalized(imp, alpha)
        for kind in ("heads", "neurons"):
            for i in range(2):
                assert imp.ranking(kind, i) == norm.ranking(kind, i)
    full = layer_normalized(imp, 1.0)
    for kind in ("heads", "neurons"):
        totals = [float(s.sum()) for s in full.of(kind)]
        assert abs(totals[0] - totals[1]) < 1e-6 * max(totals)
    assert layer_normalized(imp, 0.0) is imp


def test_every_candidate_reaches_the_aim_and_uniform_is_the_uniform_fraction():
    table, imp = _table(), _lopsided()
    cands = candidate_allocations(imp, table, 1.6)
    assert "importance" in cands and "uniform" in cands
    assert set(cands) <= set(CANDIDATES)
    for alloc in cands.values():
        assert alloc.predicted_speedup >= 1.6 - 1e-9
    assert cands["uniform"].widths == uniform_widths(table.full, uniform_fraction_for(table, 1.6))
    # On lopsided scores the raw knapsack keeps more of layer 0 than of layer 1; normalization does not.
    raw = cands["importance"].widths
    assert raw[0] != raw[1]
    assert len({a.widths for a in cands.values()}) == len(cands)  # duplicates dropped


def test_the_candidate_with_the_lowest_held_out_loss_is_chosen(tiny_model):
    """A loss that favours keeping layer 1 wide must pick the candidate that keeps it widest."""
    table, imp = _table(), _lopsided()
    cands = candidate_allocations(imp, table, 1.6)
    width1 = {name: a.widths[1][0] * 32 + a.widths[1][1] for name, a in cands.items()}
    built = []

    def build(alloc):
        built.append(alloc.widths)
        model = torch.nn.Linear(1, 1)
        model.kept = alloc.widths[1][0] * 32 + alloc.widths[1][1]  # what the fake loss reads
        return model, None, {"ok": True}

    def loss_fn(model, batch):
        return torch.tensor(-float(model.kept))

    choice = choose_allocation(imp, table, 1.6, build, tiny_model, fit=[{}], held=[{}], rescale=False,
                               loss_fn=loss_fn)
    assert choice.name == max(width1, key=width1.get)
    assert choice.built[0].kept == max(width1.values())
    assert [r["chosen"] for r in choice.record].count(True) == 1
    assert len(built) == len(cands)


def test_family_reports_the_candidates_and_never_keeps_a_worse_held_out_loss(tiny_model):
    options = SearchOptions(targets=(1.5,), seq_len=8, neuron_step=8, check_configs=0, compare_uniform=False,
                            verify_timing=FAST, config_timing=FAST, table_timing=FAST, max_tries=1)
    entry = search_family(tiny_model, _calib(97, n=8), options, table=_table()).report["targets"][0]
    try_ = entry["tries"][0]
    losses = {c["candidate"]: c["held_out_loss"] for c in try_["candidates"]}
    assert try_["chosen"] == entry["chosen"] == min(losses, key=losses.get)
    assert set(losses) <= set(CANDIDATES) and "importance" in losses
    plain = search_family(tiny_model, _calib(97, n=8), SearchOptions(**{**options.__dict__, "select": False}),
                          table=_table()).report["targets"][0]
    assert plain["chosen"] == "importance" and plain["tries"][0]["candidates"] == []



def test_searched_against_uniform_is_a_paired_ci_over_the_same_predictions():
    from prunebench.results.correctness import pack_correct
    from prunebench.search.family import paired_vs

    rng = torch.Generator().manual_seed(0)
    base = (torch.rand(2000, generator=rng) < 0.6).tolist()
    one_off = list(base)
    one_off[0] = not one_off[0]  # one example apart: no measurable difference
    worse = [b and i % 5 != 0 for i, b in enumerate(base)]  # ~12 pp worse: measurable

    def acc(bits):
        return {"accuracy": sum(bits) / len(bits), "n_predictions": len(bits), "correct": pack_correct(bits)}

    same = paired_vs(acc(one_off), acc(base))
    assert same is not None and same["low"] <= 0 <= same["high"] and not same["measurable"]
    bad = paired_vs(acc(worse), acc(base))
    assert bad["high"] < 0 and bad["measurable"]
    assert paired_vs(acc(base[:100]), acc(base)) is None  # different predictions do not pair
    assert paired_vs({"accuracy": 0.5, "n_predictions": 4}, acc(base)) is None


def test_a_one_linear_capture_stops_early_and_sees_what_a_full_forward_sees(tiny_model):
    """What the refit (pruning.refit) relies on: a stopping tap sees each batch once, as a full forward does."""
    from prunebench.models.adapters import adapter_for
    from prunebench.pruning.calibration import tap_linears

    ad = adapter_for(tiny_model)
    first, last = ad.output_linear("neurons", 0), ad.output_linear("neurons", ad.n_layers - 1)
    batches = _calib(97, n=2)
    alone: list[torch.Tensor] = []
    both: dict[str, list[torch.Tensor]] = {"a": [], "b": []}
    tap_linears(tiny_model, {"a": first}, batches, lambda _, rows: alone.append(rows), stop=True)
    tap_linears(tiny_model, {"a": first, "b": last}, batches, lambda k, rows: both[k].append(rows))
    together = both["a"]
    assert len(alone) == len(together) == len(both["b"]) == 2
    for x, y in zip(alone, together, strict=True):
        assert torch.equal(x, y)
    assert not first._forward_hooks and not last._forward_hooks  # removed even though the forward was cut
