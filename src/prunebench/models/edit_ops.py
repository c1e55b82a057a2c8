"""Tensor surgery shared by adapters: copying Linears without random init, head index maths, gate hooks."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn


def new_linear(weight: torch.Tensor, bias: torch.Tensor | None, requires_grad: bool) -> nn.Linear:
    """An nn.Linear holding copies of ``weight`` [out, in] and ``bias`` [out], with no random init."""
    out_f, in_f = weight.shape
    with warnings.catch_warnings():
        # A fully removed block gives a zero-sized Linear; torch warns that initializing it is a no-op.
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        lin = nn.Linear(in_f, out_f, bias=bias is not None, device="meta", dtype=weight.dtype)
    lin.weight = nn.Parameter(weight.detach().clone(), requires_grad=requires_grad)
    if bias is not None:
        lin.bias = nn.Parameter(bias.detach().clone(), requires_grad=requires_grad)
    return lin


def head_columns(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Columns of an output projection (= rows of a q/k/v block) that belong to ``heads``: [len(heads) * Dh]."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


def qkv_rows(cols: torch.Tensor, inner: int) -> torch.Tensor:
    """The same heads' rows of a fused qkv projection: the q, k and v blocks are ``inner = H*Dh`` rows apart."""
    return torch.cat([cols, cols + inner, cols + 2 * inner])  # [3 * len(cols)]


def head_gate(g: torch.Tensor, head_dim: int) -> Callable[..., tuple[torch.Tensor, ...]]:
    """Forward pre-hook of an output projection scaling each head's input columns by its gate."""

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (args[0] * g.repeat_interleave(head_dim), *args[1:])  # [B, S, H*Dh] * [H*Dh]

    return hook


def neuron_gate(g: torch.Tensor) -> Callable[..., tuple[torch.Tensor, ...]]:
    """Forward pre-hook of an FFN output Linear scaling each neuron's activation by its gate."""

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (args[0] * g, *args[1:])  # [B, S, F] * [F]

    return hook


def layer_gate(g: torch.Tensor) -> Callable[..., torch.Tensor]:
    """Forward hook of a residual layer scaling its whole update ``out - x`` by the gate."""

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        x = args[0]  # [B, S, D] layer input
        return x + g * (out - x)  # gate scales the layer's whole residual update

    return hook
