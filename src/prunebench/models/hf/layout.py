"""Where one Hugging Face encoder family keeps its layers, heads and FFN neurons (module paths only).

A :class:`Layout` is plain data: dotted paths from the base model to the layer list and from a layer to its
projections, plus the attribute and config names that must follow a shrink. The adapter code in
:mod:`prunebench.models.hf.adapter` is written once against it; a family is a layout plus its model classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Layout:
    """Module paths and metadata names of one family's encoder stack.

    Attributes:
        layers: path from the base model to the ``nn.ModuleList`` of layers (``encoder.layer``).
        attention: path from a layer to the module holding the head-count attributes (``attention.self``).
        query, key, value: paths from a layer to the q / k / v projections (each ``[H*Dh, D]``).
        attn_out: path from a layer to the attention output projection (``[D, H*Dh]``; head = columns).
        ffn_in, ffn_out: paths from a layer to the FFN projections (``[F, D]`` and ``[D, F]``).
        heads_attr: attribute of the attention module holding its head count.
        width_attr: attribute of the attention module holding ``H*Dh`` (None where the family has none).
        head_dim_attr: attribute of the attention module holding the head width ``Dh``.
        config_layers, config_heads, config_ffn, config_hidden: names of those sizes in the HF config.
        stack_count: path from the base model to a module whose ``n_layers`` attribute counts layers (or None).
        token_types: the family's forward takes ``token_type_ids``.
    """

    layers: str
    attention: str
    query: str
    key: str
    value: str
    attn_out: str
    ffn_in: str
    ffn_out: str
    heads_attr: str
    width_attr: str | None
    head_dim_attr: str
    config_layers: str
    config_heads: str
    config_ffn: str
    config_hidden: str
    stack_count: str | None = None
    token_types: bool = True


#: BERT and every family that copied its module names (RoBERTa, XLM-R, CamemBERT, MiniLM checkpoints).
BERT_LAYOUT = Layout(
    layers="encoder.layer", attention="attention.self", query="attention.self.query", key="attention.self.key",
    value="attention.self.value", attn_out="attention.output.dense", ffn_in="intermediate.dense",
    ffn_out="output.dense", heads_attr="num_attention_heads", width_attr="all_head_size",
    head_dim_attr="attention_head_size", config_layers="num_hidden_layers", config_heads="num_attention_heads",
    config_ffn="intermediate_size", config_hidden="hidden_size",
)

#: DistilBERT: other module names, the attention module owns its output projection, no token types.
DISTILBERT_LAYOUT = Layout(
    layers="transformer.layer", attention="attention", query="attention.q_lin", key="attention.k_lin",
    value="attention.v_lin", attn_out="attention.out_lin", ffn_in="ffn.lin1", ffn_out="ffn.lin2",
    heads_attr="n_heads", width_attr=None, head_dim_attr="attention_head_size", config_layers="n_layers",
    config_heads="n_heads", config_ffn="hidden_dim", config_hidden="dim", stack_count="transformer",
    token_types=False,
)


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the module at dotted ``path`` under ``root``."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


class SkippedLayer(nn.Module):
    """A layer masked out as a whole: it returns its input (the masked reference of layer removal).

    HF encoders are post-norm (``LayerNorm(x + f(x))``), so no zeroing of weights makes a layer the identity.
    This module keeps the original (zeroed) sub-modules under their own names, so parameter names, plans and
    checkpoints are unchanged, and skips them in the forward.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        for name, child in layer.named_children():
            self.add_module(name, child)

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        """The input, unchanged (any further arguments the encoder passes are ignored)."""
        return hidden_states


class HeadlessAttention(nn.Module):
    """An attention module left with 0 heads; it computes what the fully masked block computes.

    HF attention cannot run with 0 heads (its reshape to ``[B, S, -1, Dh]`` is ambiguous on an empty
    tensor). With every head gone the block adds only its output projection's bias, so this module returns
    an empty ``[B, S, 0]`` context (or, where the family's attention module owns the output projection, that
    projection applied to it: the bias). The original, now empty, projections stay under their own names.

    Args:
        attention: the attention module being replaced (its children are kept).
        layout: the family's layout (attribute names).
        out_name: name of the output projection among ``attention``'s children, or None if it lives outside.
        head_dim: width of a head, kept for the manifest.
    """

    def __init__(self, attention: nn.Module, layout: Layout, out_name: str | None, head_dim: int) -> None:
        super().__init__()
        for name, child in attention.named_children():
            self.add_module(name, child)
        self.out_name = out_name
        setattr(self, layout.head_dim_attr, head_dim)
        setattr(self, layout.heads_attr, 0)
        if layout.width_attr is not None:
            setattr(self, layout.width_attr, 0)

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> tuple[torch.Tensor, None]:
        """``(context, None)`` as HF attention returns; the context has no features (or is the output bias)."""
        empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)  # [B, S, 0]
        if self.out_name is not None:
            return getattr(self, self.out_name)(empty), None  # [B, S, D]: the projection's bias
        return empty, None
