"""EncoderAdapter: locating, zeroing, shrinking and gating heads / neurons / layers."""

from __future__ import annotations

import copy

import pytest
import torch

from prunebench.models import EncoderConfig, LayerConfig, build_encoder
from prunebench.models.adapter import EncoderAdapter
from prunebench.models.batch import task_loss


def _randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Large random weights and biases, so that every bias path shows up in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def _batch(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _out(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.encode(batch["input_ids"], batch["attention_mask"])


def test_prunable_linears_are_the_four_layer_linears_in_order(tiny_model) -> None:
    names = list(EncoderAdapter(tiny_model).prunable_linears())
    assert len(names) == 4 * tiny_model.config.n_layers
    assert names[:4] == [f"layers.0.{n}" for n in ("attn.qkv_proj", "attn.out_proj", "ffn.fc_in", "ffn.fc_out")]
    modules = dict(tiny_model.named_modules())
    for name, lin in EncoderAdapter(tiny_model).prunable_linears().items():
        assert modules[name] is lin  # names are real qualified module names
    assert not any("embed" in n or "mlm" in n or "classifier" in n for n in names)


def test_layer_names_round_trip() -> None:
    assert EncoderAdapter.layer_of("layers.12.ffn.fc_in") == 12
    assert EncoderAdapter.rename_layer("layers.12.ffn.fc_in", 3) == "layers.3.ffn.fc_in"
    with pytest.raises(ValueError, match="not the name"):
        EncoderAdapter.layer_of("embed_tokens")


def test_rejects_other_models() -> None:
    with pytest.raises(ValueError, match="TransformerEncoder"):
        EncoderAdapter(torch.nn.Linear(2, 2))


def test_group_weights_shapes(hetero_config: EncoderConfig) -> None:
    model = build_encoder(hetero_config)
    a = EncoderAdapter(model)
    D = hetero_config.d_model
    heads = a.group_weights("heads", 0)
    assert [tuple(p.shape) for p in heads] == [(3, 3 * 4 * D), (3, 4 * D)]  # q, k, v rows; out columns
    assert [tuple(p.shape) for p in a.group_weights("neurons", 0)] == [(100, D), (100, D)]
    assert a.group_count("heads", 1) == 0 and a.group_count("neurons", 2) == 0
    with pytest.raises(ValueError, match="choose from"):
        a.group_weights("rows", 0)


def test_head_group_is_rows_and_out_columns(tiny_model) -> None:
    a = EncoderAdapter(tiny_model)
    attn = tiny_model.layers[0].attn
    Dh = attn.head_dim
    inner = attn.n_heads * Dh
    qkv = a.group_weights("heads", 0)[0]
    w = attn.qkv_proj.weight
    expected = torch.cat([w[Dh:2 * Dh], w[inner + Dh:inner + 2 * Dh], w[2 * inner + Dh:2 * inner + 2 * Dh]])
    assert torch.equal(qkv[1], expected.reshape(-1))  # head 1's rows of the q, k and v blocks
    out = a.group_weights("heads", 0)[1]
    assert torch.equal(out[2], attn.out_proj.weight[:, 2 * Dh:3 * Dh].reshape(-1))


@pytest.mark.parametrize("kind", ["heads", "neurons"])
def test_zeroing_equals_removing(tiny_model, kind: str) -> None:
    _randomize_(tiny_model)
    batch = _batch(tiny_model.config.vocab_size)
    zeroed, shrunk = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    n = EncoderAdapter(tiny_model).group_count(kind, 1)
    EncoderAdapter(zeroed).zero_groups_(kind, 1, [0, 2])
    EncoderAdapter(shrunk).keep_groups_(kind, 1, [i for i in range(n) if i not in (0, 2)])
    assert EncoderAdapter(shrunk).group_count(kind, 1) == n - 2
    torch.testing.assert_close(_out(zeroed, batch), _out(shrunk, batch), atol=1e-5, rtol=0)
    assert not torch.allclose(_out(zeroed, batch), _out(tiny_model, batch), atol=1e-3)


def test_removing_every_head_keeps_the_output_bias(tiny_model) -> None:
    _randomize_(tiny_model)
    batch = _batch(tiny_model.config.vocab_size)
    zeroed, shrunk = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    EncoderAdapter(zeroed).zero_groups_("heads", 0, range(4))
    EncoderAdapter(shrunk).keep_groups_("heads", 0, [])
    assert shrunk.config.layers[0].n_heads == 0
    torch.testing.assert_close(_out(zeroed, batch), _out(shrunk, batch), atol=1e-5, rtol=0)


def test_zero_layer_equals_removing_layer(tiny_model) -> None:
    _randomize_(tiny_model)
    batch = _batch(tiny_model.config.vocab_size)
    zeroed, shrunk = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    EncoderAdapter(zeroed).zero_layer_(0)
    EncoderAdapter(shrunk).keep_layers_([1])
    assert shrunk.config.n_layers == 1
    torch.testing.assert_close(_out(zeroed, batch), _out(shrunk, batch), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="at least one"):
        EncoderAdapter(shrunk).keep_layers_([])


def test_shrunk_state_dict_matches_a_fresh_model_of_that_shape(tiny_model) -> None:
    a = EncoderAdapter(tiny_model)
    a.keep_groups_("heads", 0, [1, 3])
    a.keep_groups_("neurons", 1, list(range(5)))
    a.keep_layers_([1])
    fresh = build_encoder(tiny_model.config)
    got = {k: tuple(v.shape) for k, v in tiny_model.state_dict().items()}
    assert got == {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    assert tiny_model.config.layers == (LayerConfig(4, 4, 5),)


def test_shrink_keeps_requires_grad_and_dtype(tiny_model) -> None:
    tiny_model.layers[0].ffn.fc_in.weight.requires_grad_(False)
    EncoderAdapter(tiny_model).keep_groups_("neurons", 0, [0, 1])
    assert tiny_model.layers[0].ffn.fc_in.weight.requires_grad is False
    assert tiny_model.layers[0].ffn.fc_out.weight.requires_grad is True
    assert tiny_model.layers[0].ffn.fc_in.weight.dtype == torch.float32


@pytest.mark.parametrize("kind", ["heads", "neurons", "layers"])
def test_gates_are_neutral_give_gradients_and_are_removed(tiny_model, kind: str) -> None:
    batch = _batch(tiny_model.config.vocab_size)
    batch["labels"] = batch["input_ids"].clone()
    ref = _out(tiny_model, batch)
    a = EncoderAdapter(tiny_model)
    with a.gates(kind) as gates:
        torch.testing.assert_close(_out(tiny_model, batch), ref)  # gates of ones change nothing
        grads = torch.autograd.grad(task_loss(tiny_model, batch), gates)
        assert all(g.abs().sum() > 0 for g in grads)
        expected = 1 if kind == "layers" else a.group_count(kind, 0)
        assert gates[0].shape == (expected,)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in tiny_model.modules())


def test_gates_are_removed_after_an_error(tiny_model) -> None:
    with pytest.raises(RuntimeError, match="boom"), EncoderAdapter(tiny_model).gates("heads"):
        raise RuntimeError("boom")
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in tiny_model.modules())
