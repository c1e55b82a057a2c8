"""Data-driven importance of heads and FFN neurons of Hugging Face encoders, and uniform structured shrinking.

Weight magnitude says little about which heads and neurons a pretrained model relies on. Two scores from
real calibration text (through the model's own tokenizer) do better:

    activation  how much each group adds to the residual stream on real text: for head h the mean over
                real tokens of ``|| ctx_h @ W_O[:, h] ||`` (its slice of the attention output projection), for
                neuron j ``mean |a_j| * || W_out[:, j] ||``. Needs no labels and no gradients.
    taylor      ``sum_batches |dLoss/dgate|`` of per-group gates (Michel et al. 2019) through the adapter's
                :meth:`gates` and :meth:`loss` (a base encoder needs a ``loss_fn``, e.g. a frozen-probe loss).

:func:`shrink_uniform_` keeps the same fraction of heads and of neurons in every layer (the top-scored ones)
and removes the rest physically through the adapter, so every layer keeps one shape and the HF config can
still describe the FFN width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from prunebench.models.batch import Batch
from prunebench.pruning.refit import refit_outputs_

GROUP_SCORES = ("activation", "taylor", "l2")


def _out_linears(adapter: Any, layer: int) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """(attention output projection, FFN output projection) of ``layer``, via the adapter's layout."""
    block = adapter.layer(layer)
    return block.get_submodule(adapter.layout.attn_out), block.get_submodule(adapter.layout.ffn_out)


@torch.no_grad()
def activation_scores(adapter: Any, calib: Sequence[Batch]) -> dict[str, list[torch.Tensor]]:
    """Per layer, the mean residual contribution of every head ([H]) and neuron ([F]) on ``calib``."""
    if not calib:
        raise ValueError("activation scores need calibration batches")
    n = adapter.n_layers
    heads = [torch.zeros(adapter.group_count("heads", i), dtype=torch.float64) for i in range(n)]
    neurons = [torch.zeros(adapter.group_count("neurons", i), dtype=torch.float64) for i in range(n)]
    state: dict[str, torch.Tensor] = {}
    handles = []

    def head_hook(i: int, lin: torch.nn.Linear):
        h, dh = adapter.group_count("heads", i), adapter.head_dim(i)
        w = lin.weight.detach().view(lin.out_features, h, dh)  # [D, H, Dh]

        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            ctx = args[0].view(*args[0].shape[:-1], h, dh)  # [B, S, H, Dh]
            contrib = torch.einsum("bshk,dhk->bshd", ctx, w).norm(dim=-1)  # [B, S, H]
            m = state["mask"].unsqueeze(-1)  # [B, S, 1]
            heads[i] += ((contrib * m).sum((0, 1)) / m.sum()).double()
        return hook

    def neuron_hook(i: int, lin: torch.nn.Linear):
        col = lin.weight.detach().norm(dim=0)  # [F]

        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            m = state["mask"].unsqueeze(-1)  # [B, S, 1]
            neurons[i] += ((args[0].abs() * m).sum((0, 1)) / m.sum() * col).double()
        return hook

    try:
        for i in range(n):
            attn_out, ffn_out = _out_linears(adapter, i)
            handles.append(attn_out.register_forward_pre_hook(head_hook(i, attn_out)))
            handles.append(ffn_out.register_forward_pre_hook(neuron_hook(i, ffn_out)))
        was = adapter.model.training
        adapter.model.eval()
        try:
            for batch in calib:
                state["mask"] = batch["attention_mask"].to(torch.float32)
                adapter.hidden_states(batch)
        finally:
            adapter.model.train(was)
    finally:
        for h in handles:
            h.remove()
    return {"heads": [s.float() for s in heads], "neurons": [s.float() for s in neurons]}


def taylor_scores(adapter: Any, calib: Sequence[Batch]) -> dict[str, list[torch.Tensor]]:
    """Per layer ``sum_batches |dLoss/dgate|`` of every head and neuron (labelled ``calib``)."""
    if not calib:
        raise ValueError("taylor scores need calibration batches")
    out: dict[str, list[torch.Tensor]] = {}
    was = adapter.model.training
    adapter.model.eval()
    try:
        for kind in ("heads", "neurons"):
            with adapter.gates(kind) as gates:
                totals = [torch.zeros_like(g, dtype=torch.float64) for g in gates]
                for batch in calib:
                    with torch.enable_grad():
                        grads = torch.autograd.grad(adapter.loss(batch), gates, allow_unused=True)
                    for t, g in zip(totals, grads, strict=True):
                        if g is not None:
                            t += g.detach().abs().double()
            out[kind] = [t.float() for t in totals]
    finally:
        adapter.model.train(was)
        adapter.model.zero_grad(set_to_none=True)
    return out


@torch.no_grad()
def l2_scores(adapter: Any) -> dict[str, list[torch.Tensor]]:
    """Per layer, the L2 norm of each group's weights (the magnitude baseline)."""
    out: dict[str, list[torch.Tensor]] = {}
    for kind in ("heads", "neurons"):
        out[kind] = [sum(w.pow(2).sum(dim=1) for w in adapter.group_weights(kind, i)).sqrt()
                     for i in range(adapter.n_layers)]
    return out


def group_scores(adapter: Any, criterion: str, calib: Sequence[Batch] | None = None) -> dict[str, list[torch.Tensor]]:
    """Scores by ``criterion`` (see :data:`GROUP_SCORES`); ValueError lists the valid names."""
    scorers = {"activation": lambda: activation_scores(adapter, calib or []),
               "taylor": lambda: taylor_scores(adapter, calib or []), "l2": lambda: l2_scores(adapter)}
    if criterion not in scorers:
        raise ValueError(f"unknown group score {criterion!r}; choose from: {', '.join(GROUP_SCORES)}")
    return scorers[criterion]()


def top_k(scores: torch.Tensor, keep: int) -> list[int]:
    """Indices of the ``keep`` highest scores, ascending (ties broken by index)."""
    order = sorted(range(len(scores)), key=lambda j: (-float(scores[j]), j))
    return sorted(order[:keep])


def shrink_uniform_(adapter: Any, sparsity: float, scores: dict[str, list[torch.Tensor]],
                    kinds: Sequence[str] = ("heads", "neurons")) -> dict[str, list[list[int]]]:
    """Keep ``round((1 - sparsity) * n)`` of each ``kind`` per layer (at least one head), the top-scored.

    Returns the kept indices per kind and layer (a plan that can be replayed with ``keep_groups_``).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    kept: dict[str, list[list[int]]] = {}
    for kind in kinds:
        kept[kind] = []
        for i in range(adapter.n_layers):
            n = adapter.group_count(kind, i)
            keep = max(1 if kind == "heads" else 0, math.floor((1.0 - sparsity) * n + 0.5))
            idx = top_k(scores[kind][i], keep)
            kept[kind].append(idx)
            if len(idx) != n:
                adapter.keep_groups_(kind, i, idx)
    return kept


@torch.no_grad()
def shrink_refit_(adapter: Any, dense: Any, sparsity: float, scores: dict[str, list[torch.Tensor]],
                  calib: Sequence[Batch], ridge: float = 1e-3) -> dict[str, list[list[int]]]:
    """:func:`shrink_uniform_`, then the least-squares refit of every shrunk output projection
    (:func:`prunebench.pruning.refit.refit_outputs_`: layer by layer, to the *dense* model's outputs, from the
    inputs the pruned model now produces), a plain ridge of ``ridge * mean(diag(X^T X))``. Needs more
    calibration tokens than kept groups' width (hundreds of short texts suffice).

    Args:
        adapter: adapter of the model to shrink (in place); ``dense``: adapter of an unpruned copy.
    """
    if not calib:
        raise ValueError("refitting needs calibration batches")
    kept = shrink_uniform_(adapter, sparsity, scores)
    refit_outputs_(adapter, dense, calib, ridge=ridge, prior="zero")
    return kept
