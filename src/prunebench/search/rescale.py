"""Mask rescaling without training: the least-squares refit of each layer's output projections, kept only
if it helps.

The refit itself is :func:`prunebench.pruning.refit.refit_outputs_` (forward order, each projection fitted to
the dense model's outputs from the inputs the already-refitted layers produce), with a ridge pulled toward the
current weights. The search keeps it only if it lowers the task loss on held-out calibration batches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from prunebench.models.batch import Batch, LossFn, task_loss
from prunebench.pruning.calibration import evaluation_mode, model_device, to_device
from prunebench.pruning.refit import refit_outputs_, refit_targets

log = logging.getLogger(__name__)


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
    targets = refit_targets(pruned, dense)
    before = mean_loss(pruned, check, loss_fn)
    if not targets:
        return {"applied": False, "loss_before": before, "loss_after": before, "refit": []}
    saved = {name: (lin.weight.detach().clone(), lin.bias.detach().clone()) for name, (lin, _) in targets.items()}
    refit_outputs_(pruned, dense, fit, ridge=ridge, prior="current", targets=targets)
    after = mean_loss(pruned, check, loss_fn)
    applied = after < before
    if not applied:
        with torch.no_grad():
            for name, (lin, _) in targets.items():
                lin.weight.copy_(saved[name][0])
                lin.bias.copy_(saved[name][1])
    log.info("rescaling: check loss %.4f -> %.4f (%s)", before, after, "kept" if applied else "undone")
    return {"applied": applied, "loss_before": before, "loss_after": after, "refit": list(targets)}
