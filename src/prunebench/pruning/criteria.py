"""Criteria: importance scores, higher = keep. Scores never modify the model.

Per-weight scores (unstructured, N:M):
    l1      |W|
    l2      W^2                                  (same ranking as l1 per weight; differs for groups)
    taylor  |W * sum_batches dL/dW|              first-order estimate of the loss change if W -> 0
    wanda   |W_ij| * ||X_j||_2                   Sun et al. 2023; X = the Linear's calibration inputs
    random  uniform noise from ``seed``          a control
Per-group scores (structured: heads, neurons, layers):
    l1 / l2 norm of every weight of the group, taylor = sum_batches |dL/dgate| (Michel et al. 2019).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch

from prunebench.models.adapter import EncoderAdapter
from prunebench.models.batch import Batch, task_loss
from prunebench.pruning.calibration import check_calib, evaluation_mode, input_sq_norms, model_device, to_device

WEIGHT_CRITERIA = ("l1", "l2", "taylor", "wanda", "random")
GROUP_CRITERIA = ("l1", "l2", "taylor", "random")


def weight_scores(
    adapter: EncoderAdapter, criterion: str, calib: Sequence[Batch] | None = None, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Per-weight importance of every prunable Linear: name -> [out, in] scores.

    Raises:
        ValueError: unknown criterion, or a calibration criterion without (labelled) calibration data.
    """
    linears = adapter.prunable_linears()
    if criterion == "l1":
        return {n: lin.weight.detach().abs() for n, lin in linears.items()}
    if criterion == "l2":
        return {n: lin.weight.detach().pow(2) for n, lin in linears.items()}
    if criterion == "random":
        gen = torch.Generator().manual_seed(seed)
        return {n: torch.rand(lin.weight.shape, generator=gen).to(lin.weight.device) for n, lin in linears.items()}
    if criterion == "wanda":
        batches = check_calib(calib, purpose="the wanda criterion")
        sq = input_sq_norms(adapter.model, linears, batches)
        return {n: wanda_scores(lin.weight.detach(), sq[n]) for n, lin in linears.items()}
    if criterion == "taylor":
        batches = check_calib(calib, purpose="the taylor criterion", labelled=True)
        names = list(linears)
        params = [linears[n].weight for n in names]
        grads = _sum_grads(adapter, params, batches)
        return {n: (p.detach() * g).abs() for n, p, g in zip(names, params, grads, strict=True)}
    raise ValueError(f"unknown criterion {criterion!r}; choose from: {', '.join(WEIGHT_CRITERIA)}")


def wanda_scores(weight: torch.Tensor, input_sq_sum: torch.Tensor) -> torch.Tensor:
    """Wanda importance ``|W_ij| * ||X_j||_2`` from a weight [out, in] and per-feature sums of squares [in]."""
    # Each input column j of W is scaled by how large feature j is on real data.
    return weight.abs() * input_sq_sum.sqrt()[None, :]  # [out, in]


def group_scores(
    adapter: EncoderAdapter, kind: str, criterion: str, calib: Sequence[Batch] | None = None, seed: int = 0
) -> list[torch.Tensor]:
    """Importance of every group of ``kind``: per layer a [groups] tensor (``layers``: one [n_layers] tensor).

    Raises:
        ValueError: unknown criterion, or taylor without labelled calibration batches.
    """
    L = adapter.n_layers
    if criterion in ("l1", "l2"):
        per_layer = []
        for i in range(L):
            parts = adapter.group_weights(kind, i)  # each [groups, elements]
            if criterion == "l1":
                per_layer.append(sum(p.detach().abs().sum(dim=1) for p in parts))
            else:
                per_layer.append(torch.sqrt(sum(p.detach().pow(2).sum(dim=1) for p in parts)))
        return [torch.cat(per_layer)] if kind == "layers" else per_layer
    if criterion == "random":
        gen = torch.Generator().manual_seed(seed)
        sizes = [L] if kind == "layers" else [adapter.group_count(kind, i) for i in range(L)]
        return [torch.rand(n, generator=gen) for n in sizes]
    if criterion == "taylor":
        return taylor_group_scores(adapter, (kind,), calib)[kind]
    raise ValueError(f"unknown structured criterion {criterion!r}; choose from: {', '.join(GROUP_CRITERIA)}")


def taylor_group_scores(
    adapter: EncoderAdapter, kinds: Sequence[str], calib: Sequence[Batch] | None
) -> dict[str, list[torch.Tensor]]:
    """Taylor importance of several group kinds from one forward/backward pass per calibration batch.

    Returns:
        kind -> per-layer [groups] tensors (``layers``: one [n_layers] tensor), as :func:`group_scores`.
    """
    batches = check_calib(calib, purpose="the taylor criterion", labelled=True)
    with ExitStack() as stack:
        gates = {kind: stack.enter_context(adapter.gates(kind)) for kind in kinds}
        flat = [g for kind in kinds for g in gates[kind]]
        acc = [torch.zeros_like(g) for g in flat]
        device = model_device(adapter.model)
        with evaluation_mode(adapter.model), torch.enable_grad():
            for batch in batches:
                loss = task_loss(adapter.model, to_device(batch, device))
                grads = torch.autograd.grad(loss, flat, allow_unused=True)
                for a, g in zip(acc, grads, strict=True):
                    if g is not None:  # a layer with 0 heads never uses its (empty) gate
                        a += g.detach().abs()
    out, start = {}, 0
    for kind in kinds:
        part = acc[start:start + len(gates[kind])]
        start += len(part)
        out[kind] = [torch.cat(part)] if kind == "layers" else part
    return out


def _sum_grads(adapter: EncoderAdapter, params: list[torch.Tensor], batches: list[Batch]) -> list[torch.Tensor]:
    """Sum over batches of dLoss/dparam, computed with autograd.grad so no ``.grad`` is left on the model."""
    acc = [torch.zeros_like(p) for p in params]
    device = model_device(adapter.model)
    frozen = [p for p in params if not p.requires_grad]
    try:
        for p in frozen:  # a frozen weight still has a Taylor score; unfreeze it for the measurement only
            p.requires_grad_(True)
        with evaluation_mode(adapter.model), torch.enable_grad():
            for batch in batches:
                loss = task_loss(adapter.model, to_device(batch, device))
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for a, g in zip(acc, grads, strict=True):
                    if g is not None:
                        a += g.detach()
    finally:
        for p in frozen:
            p.requires_grad_(False)
    return acc
