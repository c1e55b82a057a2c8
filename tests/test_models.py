"""The encoder: presets, shapes, padding, per-layer widths, seeding, config validation."""

from __future__ import annotations

import pytest
import torch

from prunebench.models import (
    EncoderConfig,
    LayerConfig,
    TaskHead,
    build_encoder,
    count_parameters,
    create_model,
    preset_config,
    task_loss,
)
from tests.conftest import random_batch


def _hand_count(vocab: int, d: int, layers: int, d_ff: int, max_pos: int = 512) -> int:
    """Parameters of a uniform MLM encoder, written out term by term."""
    embeddings = vocab * d + max_pos * d
    attention = 4 * (d * d + d)  # q, k, v, out: weight + bias each
    ffn = d * d_ff + d_ff + d_ff * d + d
    norms = 2 * 2 * d
    final_norm = 2 * d
    mlm_head = d * d + d + 2 * d + vocab  # transform, its norm, decoder bias (weight tied)
    return embeddings + layers * (attention + ffn + norms) + final_norm + mlm_head


@pytest.mark.parametrize(
    ("name", "vocab", "d", "heads", "layers", "d_ff"),
    [("small", 10000, 128, 4, 2, 512), ("medium", 30000, 512, 8, 4, 1024), ("large", 30522, 768, 12, 12, 3072)],
)
def test_presets_match_the_mission_and_a_hand_count(name, vocab, d, heads, layers, d_ff):
    cfg = preset_config(name)
    assert (cfg.vocab_size, cfg.d_model, cfg.n_layers) == (vocab, d, layers)
    assert all(layer == LayerConfig(heads, d // heads, d_ff) for layer in cfg.layers)
    assert cfg.dropout == 0.1
    assert count_parameters(cfg)["total"] == _hand_count(vocab, d, layers, d_ff)


def test_built_model_has_the_counted_parameters():
    model = create_model("small")
    assert sum(p.numel() for p in model.parameters()) == count_parameters(model.config)["total"] == 1_769_104


def test_forward_shapes_for_both_heads(tiny_config):
    batch = random_batch(97, batch=3, seq=10)
    mlm = build_encoder(tiny_config).eval()
    assert mlm(batch["input_ids"], batch["attention_mask"]).shape == (3, 10, 97)
    assert mlm.encode(batch["input_ids"]).shape == (3, 10, 16)
    cls = create_model("custom", vocab_size=97, d_model=16, n_heads=4, n_layers=1, d_ff=8, head="cls", num_labels=5)
    assert cls.eval()(batch["input_ids"], batch["attention_mask"]).shape == (3, 5)
    assert sum(p.numel() for p in cls.parameters()) == count_parameters(cls.config)["total"]


def test_padding_mask_really_masks(tiny_model):
    batch = random_batch(97, batch=2, seq=12)
    mask = batch["attention_mask"]
    changed = batch["input_ids"].clone()
    changed[mask == 0] = (changed[mask == 0] + 7) % 97  # alter only padded tokens
    with torch.no_grad():
        a = tiny_model.encode(batch["input_ids"], mask)
        b = tiny_model.encode(changed, mask)
        unmasked = tiny_model.encode(changed)
    real = mask.bool()
    assert torch.allclose(a[real], b[real], atol=1e-6)
    # Without the mask the same change does move real tokens: the test above can fail.
    assert not torch.allclose(a[real], unmasked[real], atol=1e-4)


def test_heterogeneous_layers_run_and_report_their_widths(hetero_config):
    model = build_encoder(hetero_config, seed=3).eval()
    assert model.config == hetero_config
    assert [layer.attn.n_heads for layer in model.layers] == [3, 0, 2]
    out = model(**random_batch(101, seq=7))
    assert out.shape == (3, 7, 101) and torch.isfinite(out).all()
    assert sum(p.numel() for p in model.parameters()) == count_parameters(hetero_config)["total"]


def test_empty_sub_blocks_equal_their_zeroed_full_size_versions():
    """A 0-head / 0-neuron layer computes what a full layer with zeroed out-projections computes."""
    full = EncoderConfig(vocab_size=50, d_model=8, layers=(LayerConfig(2, 4, 6),), max_positions=16)
    empty = EncoderConfig(vocab_size=50, d_model=8, layers=(LayerConfig(0, 4, 0),), max_positions=16)
    a, b = build_encoder(full, seed=1).eval(), build_encoder(empty, seed=1).eval()
    with torch.no_grad():
        a.layers[0].attn.out_proj.weight.zero_()
        a.layers[0].ffn.fc_out.weight.zero_()
        a.layers[0].attn.out_proj.bias.uniform_(-1, 1)
        a.layers[0].ffn.fc_out.bias.uniform_(-1, 1)
        b.load_state_dict({k: v for k, v in a.state_dict().items() if v.shape == b.state_dict()[k].shape}, strict=False)
        b.layers[0].attn.out_proj.bias.copy_(a.layers[0].attn.out_proj.bias)
        b.layers[0].ffn.fc_out.bias.copy_(a.layers[0].ffn.fc_out.bias)
    batch = random_batch(50, seq=5)
    assert torch.allclose(a.encode(**batch), b.encode(**batch), atol=1e-6)


def test_same_seed_same_weights_and_global_rng_untouched(tiny_config):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_encoder(tiny_config, seed=5), build_encoder(tiny_config, seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)  # building a model did not consume the global RNG
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    c = build_encoder(tiny_config, seed=6)
    assert not torch.equal(a.layers[0].attn.qkv_proj.weight, c.layers[0].attn.qkv_proj.weight)


def test_sequence_longer_than_positions_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="exceeds max_positions 64"):
        tiny_model.encode(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_heads": 3}, "divisible by n_heads"),
        ({"d_model": 0}, "d_model must be a positive integer"),
        ({"n_layers": -1}, "n_layers must be a positive integer"),
        ({"vocab_size": 0}, "vocab_size must be a positive integer"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout must lie in \[0, 1\)"),
        ({"head": "seq2seq"}, "unknown task head 'seq2seq'; choose from: mlm, cls"),
        ({"head": "cls", "num_labels": 1}, "num_labels must be an integer >= 2"),
    ],
)
def test_invalid_configs_raise_clear_value_errors(kwargs, message):
    base = {"vocab_size": 10, "d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 4}
    with pytest.raises(ValueError, match=message):
        EncoderConfig.uniform(**{**base, **{k: v for k, v in kwargs.items() if k in base}},
                              **{k: v for k, v in kwargs.items() if k not in base})


def test_unknown_preset_and_option_errors_list_the_choices():
    with pytest.raises(ValueError, match="unknown model 'huge'; choose from: small, medium, large, custom"):
        create_model("huge")
    with pytest.raises(ValueError, match="unknown model option"):
        create_model("small", widht=3)
    with pytest.raises(ValueError, match="missing: vocab_size"):
        create_model("custom", d_model=8, n_heads=2, n_layers=1, d_ff=4)


def test_overrides_apply_to_presets():
    cfg = preset_config("small", n_layers=3, head="cls", num_labels=4)
    assert cfg.n_layers == 3 and cfg.head is TaskHead.CLS and cfg.num_labels == 4 and cfg.d_model == 128


def test_config_dict_round_trip(hetero_config):
    assert EncoderConfig.from_dict(hetero_config.to_dict()) == hetero_config
    with pytest.raises(ValueError, match="unknown encoder config keys: bogus"):
        EncoderConfig.from_dict({**hetero_config.to_dict(), "bogus": 1})


def test_task_loss_on_mlm_and_cls_batches(tiny_model):
    batch = random_batch(97)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, 2] = 5
    loss = task_loss(tiny_model, {**batch, "labels": labels})
    assert loss.ndim == 0 and loss.item() > 0
    with pytest.raises(ValueError, match="no 'labels'"):
        task_loss(tiny_model, batch)
    # A model without a loss of its own (an HF base encoder) is given one; it replaces the adapter's.
    seen = []
    given = task_loss(tiny_model, batch, lambda m, b: seen.append(m) or torch.tensor(7.0))
    assert float(given) == 7.0 and seen == [tiny_model]


def test_lean_forward_keeps_hooks_dropout_and_the_reference_math(tiny_model):
    """The layer calls LayerNorm functionally and its containers' forward directly; nothing else changes."""
    import torch.nn.functional as F

    batch = random_batch(tiny_model.config.vocab_size, 2, 12)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    seen: list[str] = []
    handles = [m.register_forward_hook(lambda mod, args, out, n=n: seen.append(n))
               for n, m in tiny_model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("layers.")]
    with torch.no_grad():
        out = tiny_model.eval().encode(ids, mask)
    for h in handles:
        h.remove()
    assert len(seen) == 4 * tiny_model.config.n_layers  # qkv, out, fc_in, fc_out of every layer ran as modules

    def reference(model, x_ids, m):  # the textbook pre-LN encoder, module by module
        x = model.embed_tokens(x_ids) + model.embed_positions(torch.arange(x_ids.shape[1]))
        key_mask = m.bool()[:, None, None, :]
        for layer in model.layers:
            a, h = layer.attn, layer.norm1(x)
            B, S, _ = h.shape
            q, k, v = a.qkv_proj(h).view(B, S, 3 * a.n_heads, a.head_dim).transpose(1, 2).split(a.n_heads, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask).transpose(1, 2).reshape(B, S, -1)
            x = x + a.out_proj(y)
            x = x + layer.ffn.fc_out(F.gelu(layer.ffn.fc_in(layer.norm2(x))))
        return model.final_norm(x)

    with torch.no_grad():
        torch.testing.assert_close(out, reference(tiny_model, ids, mask), rtol=0, atol=1e-6)
        tiny_model.train()
        torch.manual_seed(0)
        dropped = tiny_model.encode(ids, mask)
        tiny_model.eval()
    assert not torch.allclose(dropped, out)  # dropout still applies in training mode
