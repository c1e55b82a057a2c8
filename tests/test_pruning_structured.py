"""Structured pruning: physically removed == masked, on many random configs; shrunk models save and reload."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from prunebench.models import EncoderConfig, LayerConfig, TaskHead, build_encoder, load_model, save_model
from prunebench.pruning import PruneSpec, apply_plan_, check_fidelity, plan_pruning, prune_


def _randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Large random weights and biases (untrained init has zero biases, which would hide bias bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def _batch(vocab: int, seed: int = 0, labelled: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if labelled:
        batch["labels"] = torch.where(torch.rand(ids.shape, generator=g) < 0.5, ids, torch.full_like(ids, -100))
        batch["labels"][:, 0] = ids[:, 0]
    return batch


layer_st = st.builds(LayerConfig, n_heads=st.integers(0, 4), head_dim=st.sampled_from([2, 4]), d_ff=st.integers(0, 12))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layers=st.lists(layer_st, min_size=1, max_size=3),
    d_model=st.sampled_from([8, 12]),
    cls_head=st.booleans(),
    granularity=st.sampled_from(["heads", "neurons", "both", "layers"]),
    sparsity=st.floats(0.0, 0.95),
    scope=st.sampled_from(["layer", "global"]),
    criterion=st.sampled_from(["l1", "l2", "random", "taylor"]),
    allow_empty=st.booleans(),
    round_to=st.sampled_from([1, 2]),
    seed=st.integers(0, 1000),
)
def test_removed_equals_masked(
    layers, d_model, cls_head, granularity, sparsity, scope, criterion, allow_empty, round_to, seed
) -> None:
    config = EncoderConfig(vocab_size=31, d_model=d_model, layers=tuple(layers), max_positions=16, dropout=0.0,
                           head=TaskHead.CLS if cls_head else TaskHead.MLM, num_labels=3)
    model = _randomize_(build_encoder(config), seed)
    spec = PruneSpec(method="structured", sparsity=sparsity, granularity=granularity, scope=scope,
                     criterion=criterion, allow_empty_layers=allow_empty, round_to=round_to, seed=seed)
    batch = _batch(31, seed, labelled=True)
    if cls_head:
        batch["labels"] = torch.tensor([0, 1, 2])
    try:
        p = plan_pruning(model, spec, [batch])
    except ValueError as exc:
        assume("would remove" not in str(exc))  # impossible requests are rejected, by design
        raise
    masked, shrunk = copy.deepcopy(model), copy.deepcopy(model)
    assert apply_plan_(masked, p, "zeros") == "zeros"
    assert apply_plan_(shrunk, p, "shrink") == "shrunk"
    result = check_fidelity(masked, shrunk, batch, atol=1e-5)
    assert result["ok"], result
    # The shrunk model describes itself: its per-layer widths are the plan's kept counts.
    kept_layers = p.layers if p.layers is not None else tuple(range(len(layers)))
    assert shrunk.config.n_layers == len(kept_layers)
    for new, old in enumerate(kept_layers):
        if old in p.heads:
            assert shrunk.config.layers[new].n_heads == len(p.heads[old])
        if old in p.neurons:
            assert shrunk.config.layers[new].d_ff == len(p.neurons[old])
    fresh = build_encoder(shrunk.config)
    assert {k: v.shape for k, v in shrunk.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}


@pytest.mark.parametrize("granularity", ["heads", "neurons", "both", "layers"])
def test_structured_report_counts_and_flops(granularity: str) -> None:
    config = EncoderConfig.uniform(vocab_size=50, d_model=16, n_heads=4, n_layers=4, d_ff=32, dropout=0.0)
    model = build_encoder(config, seed=1).eval()
    report = prune_(model, PruneSpec(method="structured", sparsity=0.5, granularity=granularity))
    assert report.materialization == "shrunk"
    kinds = {"both": ("heads", "neurons")}.get(granularity, (granularity,))
    for kind in kinds:
        assert report.group_sparsity[kind] == pytest.approx(0.5)
    assert report.macs_after < report.macs_before
    assert report.params_after["encoder"] < report.params_before["encoder"]
    assert 0 < report.encoder_fraction_removed < 1
    assert report.measured_sparsity == pytest.approx(
        sum(r.params_before - r.params_after for r in report.modules) / sum(r.params_before for r in report.modules),
        abs=0.05)
    if granularity == "layers":
        assert model.config.n_layers == 2
        assert sum(r.shape_after is None for r in report.modules) == 8  # 2 removed layers x 4 Linears
        assert all(r.measured_sparsity == 1.0 for r in report.modules if r.shape_after is None)


def test_shrunk_model_saves_and_reloads_identically(tmp_path) -> None:
    config = EncoderConfig.uniform(vocab_size=40, d_model=16, n_heads=4, n_layers=3, d_ff=24, dropout=0.0)
    model = _randomize_(build_encoder(config), 3)
    prune_(model, PruneSpec(method="structured", sparsity=0.5, granularity="both", criterion="l2"))
    prune_(model, PruneSpec(method="structured", sparsity=0.34, granularity="layers"))
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config and loaded.config.n_layers == 2
    batch = _batch(40)
    assert check_fidelity(model, loaded, batch, atol=0.0)["max_abs_diff"] == 0.0


def test_unstructured_pruned_model_saves_and_reloads(tmp_path, tiny_model) -> None:
    prune_(tiny_model, PruneSpec(method="magnitude", sparsity=0.6))
    save_model(tiny_model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert check_fidelity(tiny_model, loaded, _batch(97), atol=0.0)["ok"]
    assert set(loaded.state_dict()) == set(tiny_model.state_dict())


def test_round_to_gives_multiples() -> None:
    config = EncoderConfig.uniform(vocab_size=20, d_model=16, n_heads=8, n_layers=2, d_ff=40, dropout=0.0)
    model = build_encoder(config)
    prune_(model, PruneSpec(method="structured", sparsity=0.3, granularity="both", round_to=4, scope="global"))
    assert all(layer.d_ff % 4 == 0 and layer.n_heads % 4 == 0 for layer in model.config.layers)


def test_never_empties_a_layer_unless_asked() -> None:
    config = EncoderConfig.uniform(vocab_size=20, d_model=8, n_heads=2, n_layers=2, d_ff=4, dropout=0.0)
    model = build_encoder(config, seed=5)
    p = plan_pruning(model, PruneSpec(method="structured", sparsity=0.6, granularity="heads", scope="global"))
    assert all(len(k) >= 1 for k in p.heads.values())
    p = plan_pruning(model, PruneSpec(method="structured", sparsity=0.6, granularity="heads", scope="global",
                              allow_empty_layers=True))
    assert sorted(len(k) for k in p.heads.values()) == [0, 2] or sorted(len(k) for k in p.heads.values()) == [1, 1]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (PruneSpec(method="structured", sparsity=0.9, granularity="heads"), "would remove every head of every layer"),
        (PruneSpec(method="structured", sparsity=0.9, granularity="neurons", allow_empty_layers=True),
         "would remove every neuron of every layer"),
        (PruneSpec(method="structured", sparsity=0.8, granularity="layers"), "would remove all 2 layers"),
    ],
)
def test_impossible_structured_requests(spec: PruneSpec, message: str) -> None:
    config = EncoderConfig.uniform(vocab_size=20, d_model=8, n_heads=2, n_layers=2, d_ff=4, dropout=0.0)
    model = build_encoder(config)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=message):
        prune_(model, spec)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fidelity_tolerance_has_one_default_that_passes_rounding_and_fails_a_wrong_weight() -> None:
    from prunebench.pruning import FIDELITY_ATOL

    config = EncoderConfig(vocab_size=31, d_model=8, layers=(LayerConfig(2, 4, 12),), max_positions=16, dropout=0.0)
    model = _randomize_(build_encoder(config), 0)
    batch = _batch(31)
    nudged, wrong = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        nudged.mlm_bias.add_(FIDELITY_ATOL / 2)  # every logit off by 5e-5: rounding-sized, the same model
        wrong.layers[0].ffn.fc_out.weight[0, 0] += 0.5  # one wrong weight: a pruning bug
    same = check_fidelity(model, nudged, batch)
    assert same["atol"] == FIDELITY_ATOL and same["ok"], same
    assert same["max_abs_diff"] > FIDELITY_ATOL / 4  # the nudge is seen, and passes only by the tolerance
    assert not check_fidelity(model, wrong, batch)["ok"]
