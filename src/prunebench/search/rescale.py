"""Mask rescaling without training: least-squares refit of each layer's output projections.

After heads or neurons are removed, the Linear that reads them (attention ``out_proj``, FFN ``fc_out``; the
adapter's :meth:`output_linear`) sees fewer inputs. Refitting it, layer by layer in forward order, so that
its output on calibration tokens matches the dense model's, makes up for part of what was removed (Kwon
et al. 2022 solve the same layer-wise least squares for per-group scales; refitting the whole projection
is the same problem with more freedom). The fit is a ridge regression pulled toward the current weights:

    W* = argmin_W ||[X 1] W - Y||^2 + lam ||W - W0||^2   with X [N, k] the pruned model's projection inputs
                                                          and Y [N, D] the dense model's projection outputs

Because each layer is fitted on the inputs the already-refitted earlier layers produce, errors do not
compound. The refit is kept only if it lowers the task loss on held-out calibration batches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from prunebench.models.batch import Batch, LossFn, task_loss
from prunebench.pruning.calibration import evaluation_mode, model_device, tap_linears, to_device
from prunebench.search._arch import adapter_of
from prunebench.search.importance import SEARCH_KINDS

log = logging.getLogger(__name__)


def _capture(model: nn.Module, linears: dict[str, nn.Linear], batches: Sequence[Batch], what: str
             ) -> dict[str, list[torch.Tensor]]:
    """Per Linear, its inputs (``what="in"``) or outputs (``"out"``) at real tokens, per batch [n, width].

    With a single Linear each forward stops right after it (half the layers run, on average): the refit
    captures one projection at a time, as many times as there are projections.
    """
    got: dict[str, list[torch.Tensor]] = {name: [] for name in linears}
    tap_linears(model, linears, batches, lambda name, rows: got[name].append(rows), what=what,
                stop=len(linears) == 1)
    return got


@torch.no_grad()
def _refit(lin: nn.Linear, xs: list[torch.Tensor], ys: list[torch.Tensor], ridge: float) -> None:
    """Replace ``lin``'s weight [D, k] and bias [D] by the ridge solution on (X, Y)."""
    k = lin.in_features
    xtx = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    xty = torch.zeros(k + 1, lin.out_features, dtype=torch.float64)
    for x, y in zip(xs, ys, strict=True):
        x1 = torch.cat([x.double().cpu(), torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)  # [n, k+1]
        xtx += x1.T @ x1
        xty += x1.T @ y.double().cpu()
    w0 = torch.cat([lin.weight.detach().double().cpu().T, lin.bias.detach().double().cpu()[None, :]])  # [k+1, D]
    lam = ridge * float(xtx.diagonal().mean())
    w = torch.linalg.solve(xtx + lam * torch.eye(k + 1, dtype=torch.float64), xty + lam * w0)  # [k+1, D]
    lin.weight.copy_(w[:k].T.to(lin.weight))
    lin.bias.copy_(w[k].to(lin.bias))


def mean_loss(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn | None) -> float:
    """Mean task loss of ``model`` (eval mode, no gradients) over ``batches``."""
    device = model_device(model)
    with evaluation_mode(model), torch.no_grad():
        return sum(float(task_loss(model, to_device(b, device), loss_fn)) for b in batches) / len(batches)


def rescale_(
    pruned: nn.Module, dense: nn.Module, fit: Sequence[Batch], check: Sequence[Batch], *, ridge: float = 1e-2,
    loss_fn: LossFn | None = None,
) -> dict[str, Any]:
    """Refit ``pruned``'s output projections in place on ``fit`` batches; undo unless ``check`` loss drops.

    Args:
        pruned: the shrunk model (same layers as ``dense``, fewer heads / neurons).
        dense: the model it was pruned from (the target outputs).
        fit: calibration batches for the least squares.
        check: held-out labelled batches; the refit stays only if their mean task loss goes down.
        ridge: strength of the pull toward the current weights, relative to the mean input energy.
        loss_fn: the task loss of a model without one (an HF base encoder); None: the adapter's.

    Returns:
        ``{"applied", "loss_before", "loss_after", "refit": [names]}``.
    """
    pa, da = adapter_of(pruned), adapter_of(dense)
    targets: dict[str, nn.Linear] = {}
    sources: dict[str, nn.Linear] = {}
    for i in range(pa.n_layers):
        for kind in SEARCH_KINDS:
            lin = pa.output_linear(kind, i)
            if lin.in_features and lin.in_features < da.output_linear(kind, i).in_features:
                targets[f"{i}.{kind}"] = lin
                sources[f"{i}.{kind}"] = da.output_linear(kind, i)
    before = mean_loss(pruned, check, loss_fn)
    if not targets:
        return {"applied": False, "loss_before": before, "loss_after": before, "refit": []}
    saved = {name: (lin.weight.detach().clone(), lin.bias.detach().clone()) for name, lin in targets.items()}
    dense_out = _capture(dense, sources, fit, "out")
    for name, lin in targets.items():  # insertion order is forward order: layer by layer, attention first
        xs = _capture(pruned, {name: lin}, fit, "in")[name]
        _refit(lin, xs, dense_out[name], ridge)
    after = mean_loss(pruned, check, loss_fn)
    applied = after < before
    if not applied:
        with torch.no_grad():
            for name, lin in targets.items():
                lin.weight.copy_(saved[name][0])
                lin.bias.copy_(saved[name][1])
    log.info("rescaling: check loss %.4f -> %.4f (%s)", before, after, "kept" if applied else "undone")
    return {"applied": applied, "loss_before": before, "loss_after": after, "refit": list(targets)}
