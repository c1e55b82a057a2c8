"""HF adapters: lookup, physically removed == masked (sdpa and eager, padded), metadata, loss, gates, MACs."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip install 'prunebench[hf]'")

from prunebench.bench.flops import counted_macs  # noqa: E402
from prunebench.models.hf import SkippedLayer, hf_adapter_for, supported_architectures  # noqa: E402
from prunebench.models.hf.layout import HeadlessAttention  # noqa: E402
from tests.hf_tiny import MODELS, VOCAB, padded_batch, tiny_model  # noqa: E402


def _outputs(adapter, batch):
    with torch.no_grad():
        return adapter.hidden_states(batch)


@pytest.mark.parametrize(("family", "cls"), MODELS)
def test_head_kind_is_one_vocabulary_for_hf_and_built_in_models(family, cls):
    from prunebench.models import EncoderConfig, TaskHead, build_encoder
    from prunebench.models.adapters import adapter_for
    from prunebench.models.arch import HEAD_KINDS

    want = "mlm" if cls.endswith("ForMaskedLM") else "cls" if cls.endswith("Classification") else "base"
    assert adapter_for(tiny_model(family, cls)).head_kind == want
    # The built-in encoder answers in the same words (its TaskHead values), so no caller translates.
    for head in TaskHead:
        model = build_encoder(EncoderConfig.uniform(vocab_size=VOCAB, d_model=8, n_heads=2, n_layers=1, d_ff=8,
                                                    max_positions=16, head=head, num_labels=3))
        assert adapter_for(model).head_kind == head.value
    assert {want, *(h.value for h in TaskHead)} <= set(HEAD_KINDS)


@pytest.mark.parametrize(("family", "cls"), MODELS)
def test_adapter_finds_the_family_and_its_modules(family, cls):
    model = tiny_model(family, cls)
    adapter = hf_adapter_for(model)
    assert adapter.name == family
    assert adapter.n_layers == 3
    assert [adapter.group_count("heads", i) for i in range(3)] == [4, 4, 4]
    assert [adapter.group_count("neurons", i) for i in range(3)] == [24, 24, 24]
    linears = adapter.prunable_linears()
    assert len(linears) == 18
    named = dict(model.named_modules())
    for name, lin in linears.items():
        assert named[name] is lin  # the model's own qualified names
        assert adapter.layer_of(name) in range(3)
    assert all(isinstance(p, torch.nn.Parameter) for p in adapter.encoder_parameters())


def test_unsupported_architecture_lists_the_supported_ones():
    model = transformers.BertForTokenClassification(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))
    with pytest.raises(ValueError, match="unsupported architecture BertForTokenClassification; supported: BertModel"):
        hf_adapter_for(model)
    assert "DistilBertForMaskedLM" in supported_architectures()


def test_decoder_configs_are_refused():
    model = tiny_model("bert", "BertModel", is_decoder=True)
    with pytest.raises(ValueError, match="decoder"):
        hf_adapter_for(model)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(MODELS), attn=st.sampled_from(["sdpa", "eager"]),
    heads=st.lists(st.sets(st.integers(0, 3), min_size=0, max_size=4), min_size=3, max_size=3),
    neurons=st.lists(st.sets(st.integers(0, 23), min_size=0, max_size=24), min_size=3, max_size=3),
    layers=st.sets(st.integers(0, 2), min_size=1, max_size=3), seed=st.integers(0, 5),
)
def test_physically_removed_equals_masked(which, attn, heads, neurons, layers, seed):
    family, cls = which
    shrunk = tiny_model(family, cls, attn=attn, seed=seed)
    masked = copy.deepcopy(shrunk)
    a, ref = hf_adapter_for(shrunk), hf_adapter_for(masked)
    for i in range(3):
        ref.zero_groups_("heads", i, sorted(set(range(4)) - heads[i]))
        ref.zero_groups_("neurons", i, sorted(set(range(24)) - neurons[i]))
        a.keep_groups_("heads", i, sorted(heads[i]))
        a.keep_groups_("neurons", i, sorted(neurons[i]))
    for i in sorted(set(range(3)) - layers):
        ref.zero_layer_(i)
    a.keep_layers_(sorted(layers))
    batch = padded_batch(seed=seed)
    diff = (_outputs(a, batch) - _outputs(ref, batch)).abs().max()
    assert float(diff) < 1e-5
    # The HF module itself (called as a user calls it) runs with the new widths and says so in its config.
    assert a.n_layers == len(layers)
    cfg = shrunk.config
    assert getattr(cfg, "num_hidden_layers", getattr(cfg, "n_layers", None)) == len(layers)
    assert [a.group_count("heads", j) for j in range(a.n_layers)] == [len(heads[i]) for i in sorted(layers)]
    out = a.forward_call(batch, include_head=True)()
    assert out is not None


@pytest.mark.parametrize(("family", "cls"), [("bert", "BertModel"), ("distilbert", "DistilBertModel")])
def test_head_metadata_follows_the_shrink(family, cls):
    model = tiny_model(family, cls)
    masked = copy.deepcopy(model)
    adapter = hf_adapter_for(model)
    adapter.keep_groups_("heads", 1, [0, 3])
    attn = adapter.layer(1).get_submodule(adapter.layout.attention)
    assert getattr(attn, adapter.layout.heads_attr) == 2
    if adapter.layout.width_attr:
        assert getattr(attn, adapter.layout.width_attr) == 2 * adapter.head_dim(1)
    assert adapter.config_dict()["layers"][1]["heads"] == 2
    adapter.keep_groups_("heads", 0, [])  # every head of a layer: HF attention cannot run with 0 heads itself
    assert isinstance(adapter.layer(0).get_submodule(adapter.layout.attention), HeadlessAttention)
    assert adapter.group_count("heads", 0) == 0
    assert adapter.macs(1, 9)["attn_scores"] == 9 * 9 * 4 * (2 + 4)
    hf_adapter_for(masked).zero_groups_("heads", 0, range(4))
    hf_adapter_for(masked).zero_groups_("heads", 1, [1, 2])
    batch = padded_batch()
    assert torch.allclose(_outputs(adapter, batch), _outputs(hf_adapter_for(masked), batch), atol=1e-5)


def test_uniform_ffn_width_is_written_to_the_config():
    model = tiny_model("bert", "BertModel")
    adapter = hf_adapter_for(model)
    adapter.keep_groups_("neurons", 0, range(10))
    assert model.config.intermediate_size == 24  # not uniform yet: the config keeps the original
    adapter.keep_groups_("neurons", 1, range(10))
    adapter.keep_groups_("neurons", 2, range(10))
    assert model.config.intermediate_size == 10
    assert adapter.plain_loadable()
    adapter.keep_groups_("heads", 0, [0])
    assert not adapter.plain_loadable()


def test_zero_layer_skips_it_and_keeps_its_names():
    model = tiny_model("bert", "BertModel")
    adapter = hf_adapter_for(model)
    names = list(adapter.prunable_linears())
    batch = padded_batch()
    adapter.zero_layer_(2)
    assert isinstance(adapter.layer(2), SkippedLayer)
    assert list(adapter.prunable_linears()) == names
    assert all(not lin.weight.any() for lin in adapter.layer_linears(2).values())
    full = _outputs(adapter, batch)
    adapter.keep_layers_([0, 1])
    assert torch.equal(full, _outputs(adapter, batch))
    assert adapter.kept_layers() == [0, 1]


def test_layer_names_follow_removed_layers():
    model = tiny_model("bert", "BertForMaskedLM")
    adapter = hf_adapter_for(model)
    name = "bert.encoder.layer.2.attention.self.query"
    assert adapter.layer_of(name) == 2
    assert adapter.rename_layer(name, 0) == "bert.encoder.layer.0.attention.self.query"
    with pytest.raises(ValueError, match="not the name"):
        adapter.layer_of("bert.pooler.dense")


@pytest.mark.parametrize(("family", "cls"), [("bert", "BertForMaskedLM"), ("distilbert", "DistilBertForMaskedLM"),
                                             ("roberta", "RobertaForMaskedLM")])
def test_mlm_loss_is_masked_token_cross_entropy(family, cls):
    model = tiny_model(family, cls)
    batch = padded_batch()
    gen = torch.Generator().manual_seed(1)
    labels = torch.where(torch.rand(batch["input_ids"].shape, generator=gen) < 0.3, batch["input_ids"], -100)
    labels[0, 0] = 5
    batch["labels"] = labels
    with torch.no_grad():
        ours = hf_adapter_for(model).loss(batch)
        theirs = model(**{k: v for k, v in batch.items()}).loss
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_classifier_loss_and_the_base_model_hook():
    model = tiny_model("bert", "BertForSequenceClassification")
    batch = {**padded_batch(), "labels": torch.tensor([0, 2, 1])}
    with torch.no_grad():
        assert torch.allclose(hf_adapter_for(model).loss(batch), model(**batch).loss, atol=1e-6)
    base = tiny_model("bert", "BertModel")
    with pytest.raises(ValueError, match="base encoder with no task loss of its own; give its adapter a loss_fn"):
        hf_adapter_for(base).loss(batch)
    calls = []

    def probe(m, b):
        calls.append(b)
        return m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).pooler_output.sum()

    assert hf_adapter_for(base, loss_fn=probe).loss(batch).ndim == 0
    assert len(calls) == 1


@pytest.mark.parametrize("kind", ["heads", "neurons", "layers"])
def test_gates_are_neutral_and_give_gradients(kind):
    model = tiny_model("bert", "BertForSequenceClassification")
    adapter = hf_adapter_for(model)
    adapter.keep_groups_("heads", 0, [1, 2])
    batch = {**padded_batch(), "labels": torch.tensor([0, 2, 1])}
    with torch.no_grad():
        plain = adapter.loss(batch)
    with adapter.gates(kind) as gates:
        gated = adapter.loss(batch)
        grads = torch.autograd.grad(gated, gates)
    assert torch.allclose(plain, gated.detach(), atol=1e-6)
    sizes = {"heads": [2, 4, 4], "neurons": [24, 24, 24], "layers": [1, 1, 1]}[kind]
    assert [g.numel() for g in grads] == sizes
    assert all(g.abs().sum() > 0 for g in grads)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


@pytest.mark.parametrize(("family", "cls"), [("bert", "BertForMaskedLM"), ("distilbert", "DistilBertForMaskedLM")])
def test_macs_match_a_flop_counter_on_the_shrunk_model(family, cls):
    model = tiny_model(family, cls)
    adapter = hf_adapter_for(model)
    adapter.keep_groups_("heads", 0, [0, 2, 3])
    adapter.keep_groups_("neurons", 1, range(7))
    adapter.keep_layers_([0, 1])
    batch = {"input_ids": torch.randint(3, VOCAB, (2, 11))}
    counted = counted_macs(adapter.forward_call(batch))
    assert adapter.macs(2, 11)["total"] == counted
    with_head = adapter.macs(2, 11, include_head=True)
    assert with_head["head"] > 0
    assert with_head["total"] == counted_macs(adapter.forward_call(batch, include_head=True))
    adapter.zero_groups_("neurons", 0, range(12))
    assert adapter.macs(2, 11, effective=True)["ffn"] == adapter.macs(2, 11)["ffn"] - 2 * 11 * 12 * 16 * 2
