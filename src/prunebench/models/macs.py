"""Theoretical multiply-accumulates (MACs) from a model's actual widths: the shared vocabulary and the
count for :class:`~prunebench.models.encoder.TransformerEncoder` (its adapter's ``macs``).

One MAC is one multiply and one add. Counted: every Linear of the encoder (fused qkv, out and the FFN),
the attention score (Q K^T) and value (P V) matmuls, and optionally the task head. Not counted: embedding
lookups, LayerNorm, GELU, softmax, residual adds and biases (elementwise work that is small and not what
pruning removes). Padding positions are computed by the model, so they are counted.

``effective=True`` counts a Linear's MACs only for its non-zero weights (what an ideal sparse kernel would
do: ``tokens * nnz(W)``). The attention score/value matmuls multiply activations by activations, so they
depend only on the structural head count and are the same in both counts.
"""

from __future__ import annotations

import torch

from prunebench.models.config import TaskHead
from prunebench.models.encoder import TransformerEncoder

#: Keys of every adapter's ``macs`` breakdown (besides ``total``).
PARTS = ("attn_proj", "attn_scores", "attn_values", "ffn", "head")


def weight_macs(weight: torch.Tensor, tokens: int, effective: bool) -> int:
    """MACs of ``tokens`` rows through a weight matrix: dense size or non-zero count."""
    n = int(torch.count_nonzero(weight).item()) if effective else weight.numel()
    return tokens * n


def check_shape(batch_size: int, seq_len: int) -> None:
    """Raise a one-line ValueError unless both are positive integers."""
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def attention_macs(batch_size: int, seq_len: int, n_heads: int, head_dim: int) -> int:
    """MACs of one of the two attention matmuls: scores [B,H,S,Dh]@[B,H,Dh,S] or values [B,H,S,S]@[B,H,S,Dh]."""
    return batch_size * n_heads * seq_len * seq_len * head_dim


@torch.no_grad()
def encoder_macs(
    model: TransformerEncoder, batch_size: int, seq_len: int, *, effective: bool = False, include_head: bool = False
) -> dict[str, int]:
    """MACs of one forward of a :class:`TransformerEncoder` at ``[batch_size, seq_len]``, by :data:`PARTS`.

    Any pruned width is counted as it is, including layers with 0 heads or neurons (they skip their block).
    """
    check_shape(batch_size, seq_len)
    tokens = batch_size * seq_len
    out = dict.fromkeys(PARTS, 0)
    for layer in model.layers:
        attn = layer.attn
        if attn.n_heads > 0:  # a 0-head layer skips the whole attention block (only a bias is added)
            for proj in (attn.qkv_proj, attn.out_proj):
                out["attn_proj"] += weight_macs(proj.weight, tokens, effective)
            per = attention_macs(batch_size, seq_len, attn.n_heads, attn.head_dim)
            out["attn_scores"] += per
            out["attn_values"] += per
        if layer.ffn.fc_in.out_features > 0:
            out["ffn"] += weight_macs(layer.ffn.fc_in.weight, tokens, effective)
            out["ffn"] += weight_macs(layer.ffn.fc_out.weight, tokens, effective)
    if include_head:
        if model.head_kind is TaskHead.MLM:
            out["head"] += weight_macs(model.mlm_transform.weight, tokens, effective)
            out["head"] += weight_macs(model.embed_tokens.weight, tokens, effective)  # tied decoder
        else:
            out["head"] += weight_macs(model.classifier.weight, batch_size, effective)
    out["total"] = sum(out[k] for k in PARTS)
    return out
