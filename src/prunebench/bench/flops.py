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

from prunebench.models.adapters import find_adapter
from prunebench.models.macs import PARTS, check_shape
from prunebench.results.cell import flop_ideal

__all__ = ["PARTS", "counted_macs", "flop_ideal_speedup", "forward_flops", "forward_macs", "macs_breakdown"]


def macs_breakdown(
    model: nn.Module,
    batch_size: int,
    seq_len: int,
    *,
    effective: bool = False,
    include_head: bool = False,
) -> dict[str, int]:
    """MACs of one forward of ``model`` at ``[batch_size, seq_len]``, by part: its adapter's ``macs``.

    Args:
        model: any model an architecture adapter understands (any pruned width, including layers with 0
            heads or neurons).
        batch_size, seq_len: input shape.
        effective: count Linear MACs for non-zero weights only.
        include_head: add the task head (the MLM transform + vocabulary projection at every position, or the
            classifier); 0 otherwise.

    Returns:
        ``{"attn_proj", "attn_scores", "attn_values", "ffn", "head", "total"}`` in MACs.

    Raises:
        ValueError: no adapter understands the model (use :func:`counted_macs` for other modules) or a bad shape.
    """
    adapter = find_adapter(model)
    if adapter is None:
        raise ValueError(
            f"theoretical MACs need a model with an architecture adapter (e.g. a prunebench TransformerEncoder), "
            f"got {type(model).__name__}; use counted_macs() for other modules"
        )
    check_shape(batch_size, seq_len)
    return adapter.macs(batch_size, seq_len, effective=effective, include_head=include_head)


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
