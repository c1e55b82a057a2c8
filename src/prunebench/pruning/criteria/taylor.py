"""``taylor``: first-order estimate of the loss change when a weight or group is removed.

Per weight ``|W * sum_batches dL/dW|``; per group ``sum_batches |dL/dgate|`` where a gate of ones
multiplies the group's output (Michel et al. 2019). Needs labelled calibration batches; gradients are taken
with ``autograd.grad``, so no ``.grad`` is left on the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch

from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.calibration import check_calib, evaluation_mode, model_device, to_device
from prunebench.pruning.criteria.base import Criterion, register_criterion

PURPOSE = "the taylor criterion"


class Taylor(Criterion):
    """Gradient times weight (or gate gradient), summed over labelled calibration batches."""

    name = "taylor"
    description = "|W * dL/dW| per weight, |dL/dgate| per group, from labelled calibration batches"
    needs_calibration = True
    needs_labels = True
    methods = ("magnitude", "structured")

    def weight_scores(
        self, adapter: ArchAdapter, calib: Sequence[Batch] | None, seed: int
    ) -> dict[str, torch.Tensor]:
        """|W * sum_batches dL/dW| of every prunable Linear."""
        batches = check_calib(calib, purpose=PURPOSE, labelled=True)
        linears = adapter.prunable_linears()
        names = list(linears)
        params = [linears[n].weight for n in names]
        grads = _sum_grads(adapter, params, batches)
        return {n: (p.detach() * g).abs() for n, p, g in zip(names, params, grads, strict=True)}

    def group_scores(
        self, adapter: ArchAdapter, kind: str, calib: Sequence[Batch] | None, seed: int
    ) -> list[torch.Tensor]:
        """sum_batches |dL/dgate| of each group of ``kind``."""
        return self.group_scores_many(adapter, (kind,), calib, seed)[kind]

    def group_scores_many(
        self, adapter: ArchAdapter, kinds: Sequence[str], calib: Sequence[Batch] | None, seed: int
    ) -> dict[str, list[torch.Tensor]]:
        """Scores of several group kinds from one forward/backward pass per calibration batch."""
        batches = check_calib(calib, purpose=PURPOSE, labelled=True)
        with ExitStack() as stack:
            gates = {kind: stack.enter_context(adapter.gates(kind)) for kind in kinds}
            flat = [g for kind in kinds for g in gates[kind]]
            acc = [torch.zeros_like(g) for g in flat]
            device = model_device(adapter.model)
            with evaluation_mode(adapter.model), torch.enable_grad():
                for batch in batches:
                    loss = adapter.loss(to_device(batch, device))
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


def _sum_grads(adapter: ArchAdapter, params: list[torch.Tensor], batches: list[Batch]) -> list[torch.Tensor]:
    """Sum over batches of dLoss/dparam, computed with autograd.grad so no ``.grad`` is left on the model."""
    acc = [torch.zeros_like(p) for p in params]
    device = model_device(adapter.model)
    frozen = [p for p in params if not p.requires_grad]
    try:
        for p in frozen:  # a frozen weight still has a Taylor score; unfreeze it for the measurement only
            p.requires_grad_(True)
        with evaluation_mode(adapter.model), torch.enable_grad():
            for batch in batches:
                loss = adapter.loss(to_device(batch, device))
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for a, g in zip(acc, grads, strict=True):
                    if g is not None:
                        a += g.detach()
    finally:
        for p in frozen:
            p.requires_grad_(False)
    return acc


register_criterion(Taylor())
