"""``fisher``: the diagonal empirical Fisher estimate of the loss change, an added criterion.

Per weight ``sum_batches (W * dL/dW)^2``, per group ``sum_batches (dL/dgate)^2``: the second-order
(Optimal Brain Damage style) saliency with the Hessian diagonal replaced by squared gradients. Unlike
``taylor`` it sums squares per batch, so gradients of opposite sign in different batches do not cancel.
This file is the whole of adding a criterion: it registers itself when the criteria package imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.calibration import check_calib
from prunebench.pruning.criteria.base import register_criterion
from prunebench.pruning.criteria.gradients import GateCriterion, sum_over_batches


class Fisher(GateCriterion):
    """Squared first-order saliency summed over labelled calibration batches."""

    name = "fisher"
    description = "sum of (W * dL/dW)^2 per weight, (dL/dgate)^2 per group, over labelled calibration batches"
    methods = ("magnitude", "structured")
    loss_change = True

    def weight_scores(
        self, adapter: ArchAdapter, calib: Sequence[Batch] | None, seed: int
    ) -> dict[str, torch.Tensor]:
        """sum_batches (W * dL/dW)^2 of every prunable Linear."""
        batches = check_calib(calib, purpose=f"the {self.name} criterion", labelled=True)
        linears = adapter.prunable_linears()
        scores = sum_over_batches(adapter, [lin.weight for lin in linears.values()], batches,
                                  lambda g, w: (w * g).pow(2))
        return dict(zip(linears, scores, strict=True))

    def gate_term(self, grad: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """(dL/dgate)^2."""
        return grad.pow(2)


register_criterion(Fisher())
