"""``taylor``: first-order estimate of the loss change when a weight or group is removed.

Per weight ``|W * sum_batches dL/dW|``; per group ``sum_batches |dL/dgate|`` where a gate of ones
multiplies the group's output (Michel et al. 2019). Needs labelled calibration batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.calibration import check_calib
from prunebench.pruning.criteria.base import register_criterion
from prunebench.pruning.criteria.gradients import GateCriterion, sum_over_batches


class Taylor(GateCriterion):
    """Gradient times weight (or gate gradient), summed over labelled calibration batches."""

    name = "taylor"
    description = "|W * dL/dW| per weight, |dL/dgate| per group, from labelled calibration batches"
    methods = ("magnitude", "structured")
    loss_change = True

    def weight_scores(
        self, adapter: ArchAdapter, calib: Sequence[Batch] | None, seed: int
    ) -> dict[str, torch.Tensor]:
        """|W * sum_batches dL/dW| of every prunable Linear."""
        batches = check_calib(calib, purpose=f"the {self.name} criterion", labelled=True)
        linears = adapter.prunable_linears()
        params = [lin.weight for lin in linears.values()]
        grads = sum_over_batches(adapter, params, batches, lambda g, w: g)
        return {n: (p.detach() * g).abs() for n, p, g in zip(linears, params, grads, strict=True)}

    def gate_term(self, grad: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """|dL/dgate|."""
        return grad.abs()


register_criterion(Taylor())
