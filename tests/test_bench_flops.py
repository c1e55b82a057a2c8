"""Theoretical MACs: checked against torch's FlopCounterMode and against hand counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunebench.bench.flops import counted_macs, flop_ideal_speedup, forward_flops, forward_macs, macs_breakdown
from prunebench.models.config import EncoderConfig, LayerConfig
from prunebench.models.encoder import build_encoder
from prunebench.models.presets import create_model


def tiny(**kw):
    base = {"vocab_size": 50, "d_model": 16, "n_heads": 2, "n_layers": 2, "d_ff": 24}
    base.update(kw)
    return create_model("custom", **base).eval()


def _inputs(b: int, s: int, vocab: int = 50):
    ids = torch.randint(1, vocab, (b, s), generator=torch.Generator().manual_seed(0))
    return ids, torch.ones(b, s, dtype=torch.long)


@pytest.mark.parametrize("head", ["mlm", "cls"])
@pytest.mark.parametrize("include_head", [False, True])
def test_matches_flop_counter(head: str, include_head: bool) -> None:
    model = tiny(head=head)
    ids, mask = _inputs(3, 7)
    call = (lambda: model(ids, mask)) if include_head else (lambda: model.encode(ids, mask))
    assert forward_macs(model, 3, 7, include_head=include_head) == counted_macs(call)


def test_matches_flop_counter_on_pruned_widths() -> None:
    # Uneven per-layer widths, a 0-head layer and a 0-neuron layer: the count must follow the real modules.
    layers = (LayerConfig(3, 4, 10), LayerConfig(0, 4, 7), LayerConfig(1, 4, 0))
    model = build_encoder(EncoderConfig(vocab_size=40, d_model=12, layers=layers)).eval()
    ids, mask = _inputs(2, 5, 40)
    assert forward_macs(model, 2, 5) == counted_macs(lambda: model.encode(ids, mask))


def test_hand_count_and_breakdown() -> None:
    model = tiny()
    b, s, d, f, h, dh = 2, 5, 16, 24, 2, 8
    parts = macs_breakdown(model, b, s)
    assert parts["attn_proj"] == 2 * 4 * b * s * d * d
    assert parts["attn_scores"] == parts["attn_values"] == 2 * b * h * s * s * dh
    assert parts["ffn"] == 2 * 2 * b * s * d * f
    assert parts["head"] == 0
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")
    assert forward_flops(model, b, s) == 2 * parts["total"]


def test_effective_counts_only_nonzero_weights() -> None:
    model = tiny()
    dense = macs_breakdown(model, 2, 5)
    with torch.no_grad():
        model.layers[0].ffn.fc_in.weight[:, ::2] = 0.0  # half of one FFN matrix
    eff = macs_breakdown(model, 2, 5, effective=True)
    assert eff["ffn"] == dense["ffn"] - 2 * 5 * (16 * 24) // 2
    assert eff["attn_proj"] == dense["attn_proj"]
    assert eff["attn_scores"] == dense["attn_scores"]  # activation x activation: structural only
    assert forward_macs(model, 2, 5) == dense["total"]  # the dense count ignores zeros


def test_half_layers_ideal_speedup_is_two() -> None:
    full, half = tiny(n_layers=4), tiny(n_layers=2)
    assert flop_ideal_speedup(full, half, 4, 8) == pytest.approx(2.0)


@pytest.mark.parametrize("shape", [(0, 4), (2, -1), (1.5, 4)])
def test_bad_shape(shape) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        forward_macs(tiny(), *shape)


def test_other_module_is_refused_with_a_pointer() -> None:
    with pytest.raises(ValueError, match="counted_macs"):
        forward_macs(nn.Linear(3, 3), 1, 1)
    lin = nn.Linear(3, 5)
    assert counted_macs(lambda: lin(torch.zeros(4, 3))) == 4 * 3 * 5
