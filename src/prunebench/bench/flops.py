"""Theoretical multiply-accumulates (MACs) of a forward pass, from the model's actual widths.

One MAC is one multiply and one add; FLOPs are reported as ``2 * MACs`` (the usual convention, and what
``torch.utils.flop_counter`` counts for matmuls). Counted: every Linear of the encoder (fused qkv, out and
the FFN), the attention score (Q K^T) and value (P V) matmuls, and optionally the task head. Not counted:
embeddings lookups, LayerNorm, GELU, softmax, residual adds and biases (elementwise work that is small and
not what pruning removes). Padding positions are computed by the model, so they are counted.

``effective=True`` counts a Linear's MACs only for its non-zero weights (what an ideal sparse kernel would
do: ``tokens * nnz(W)``). The attention score/value matmuls multiply activations by activations, so they
depend only on the structural head count and are the same in both counts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunebench.models.config import TaskHead
from prunebench.models.encoder import TransformerEncoder
from prunebench.results.cell import flop_ideal

#: Keys of :func:`macs_breakdown` (besides ``total``).
PARTS = ("attn_proj", "attn_scores", "attn_values", "ffn", "head")


def _weight_macs(weight: torch.Tensor, tokens: int, effective: bool) -> int:
    """MACs of ``tokens`` rows through a weight matrix: dense size or non-zero count."""
    n = int(torch.count_nonzero(weight).item()) if effective else weight.numel()
    return tokens * n


def _check_shape(batch_size: int, seq_len: int) -> None:
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def macs_breakdown(
    model: nn.Module,
    batch_size: int,
    seq_len: int,
    *,
    effective: bool = False,
    include_head: bool = False,
) -> dict[str, int]:
    """MACs of one forward of ``model`` at ``[batch_size, seq_len]``, by part.

    Args:
        model: a :class:`TransformerEncoder` (any pruned width, including layers with 0 heads or neurons).
        batch_size, seq_len: input shape.
        effective: count Linear MACs for non-zero weights only.
        include_head: add the task head (the MLM transform + vocabulary projection at every position, or the
            classifier); 0 otherwise.

    Returns:
        ``{"attn_proj", "attn_scores", "attn_values", "ffn", "head", "total"}`` in MACs.

    Raises:
        ValueError: not a TransformerEncoder (use :func:`counted_macs` for other modules) or a bad shape.
    """
    if not isinstance(model, TransformerEncoder):
        raise ValueError(
            f"theoretical MACs need a prunebench TransformerEncoder, got {type(model).__name__}; "
            "use counted_macs() for other modules"
        )
    _check_shape(batch_size, seq_len)
    tokens = batch_size * seq_len
    out = dict.fromkeys(PARTS, 0)
    with torch.no_grad():
        for layer in model.layers:
            attn = layer.attn
            if attn.n_heads > 0:  # a 0-head layer skips the whole attention block (only a bias is added)
                for proj in (attn.qkv_proj, attn.out_proj):
                    out["attn_proj"] += _weight_macs(proj.weight, tokens, effective)
                # Scores: [B, H, S, Dh] @ [B, H, Dh, S]; values: [B, H, S, S] @ [B, H, S, Dh].
                per = batch_size * attn.n_heads * seq_len * seq_len * attn.head_dim
                out["attn_scores"] += per
                out["attn_values"] += per
            if layer.ffn.fc_in.out_features > 0:
                out["ffn"] += _weight_macs(layer.ffn.fc_in.weight, tokens, effective)
                out["ffn"] += _weight_macs(layer.ffn.fc_out.weight, tokens, effective)
        if include_head:
            if model.head_kind is TaskHead.MLM:
                out["head"] += _weight_macs(model.mlm_transform.weight, tokens, effective)
                out["head"] += _weight_macs(model.embed_tokens.weight, tokens, effective)  # tied decoder
            else:
                out["head"] += _weight_macs(model.classifier.weight, batch_size, effective)
    out["total"] = sum(out[k] for k in PARTS)
    return out


def forward_macs(
    model: nn.Module,
    batch_size: int,
    seq_len: int,
    *,
    effective: bool = False,
    include_head: bool = False,
) -> int:
    """Total MACs of one forward (see :func:`macs_breakdown` for what is counted)."""
    return macs_breakdown(model, batch_size, seq_len, effective=effective, include_head=include_head)["total"]


def forward_flops(model: nn.Module, batch_size: int, seq_len: int, **kwargs: Any) -> int:
    """``2 * forward_macs(...)``: FLOPs with one multiply and one add per MAC."""
    return 2 * forward_macs(model, batch_size, seq_len, **kwargs)


def flop_ideal_speedup(
    baseline: nn.Module, candidate: nn.Module, batch_size: int, seq_len: int, **kwargs: Any
) -> float | None:
    """:func:`prunebench.results.cell.flop_ideal` of two models: baseline dense MACs / candidate non-zero MACs."""
    cand = forward_macs(candidate, batch_size, seq_len, effective=True, **kwargs)
    return flop_ideal(forward_macs(baseline, batch_size, seq_len, **kwargs), cand)


def counted_macs(fn: Any) -> int:
    """MACs of calling ``fn()`` as counted by ``torch.utils.flop_counter.FlopCounterMode`` (any module).

    Attention runs through the math kernel during counting, because FlopCounterMode does not see inside the
    fused CPU attention kernel. Counts all matmuls (including any head the call computes), dense weights.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2
