"""Gradient passes shared by gradient-based criteria (taylor, fisher): sums over calibration batches.

Gradients are taken with ``autograd.grad``, so no ``.grad`` is left on the model; frozen weights are
unfrozen for the measurement only; the model runs in eval mode (no dropout) and its mode is restored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack

import torch

from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.calibration import check_calib, evaluation_mode, model_device, to_device
from prunebench.pruning.criteria.base import Criterion

#: ``term(grad, tensor)`` -> what one batch adds to the running sum for ``tensor``.
Term = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sum_over_batches(
    adapter: ArchAdapter, tensors: list[torch.Tensor], batches: Sequence[Batch], term: Term,
    dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """Per tensor, the sum over ``batches`` of ``term(dLoss/dtensor, tensor)`` (unused tensors add nothing).

    ``dtype``: compute each term and the sum in it (gradients cast first); None: the tensors' own dtype.
    """
    acc = [torch.zeros_like(t, dtype=dtype) for t in tensors]
    device = model_device(adapter.model)
    frozen = [t for t in tensors if not t.requires_grad]
    try:
        for t in frozen:  # a frozen weight still has a score; unfreeze it for the measurement only
            t.requires_grad_(True)
        with evaluation_mode(adapter.model), torch.enable_grad():
            for batch in batches:
                loss = adapter.loss(to_device(batch, device))
                grads = torch.autograd.grad(loss, tensors, allow_unused=True)
                for a, g, t in zip(acc, grads, tensors, strict=True):
                    if g is not None:  # e.g. a layer with 0 heads never uses its (empty) gate
                        a += term(g.detach().to(a.dtype), t.detach().to(a.dtype))
    finally:
        for t in frozen:
            t.requires_grad_(False)
    return acc


def gate_sums(
    adapter: ArchAdapter, kinds: Sequence[str], batches: Sequence[Batch], term: Term
) -> dict[str, list[torch.Tensor]]:
    """:func:`sum_over_batches` of the adapter's group gates of every kind, from one backward per batch.

    Terms are summed in float64 (a gate is one number per group, so it costs nothing, and a float32 sum over
    hundreds of batches would decide near ties by rounding); the engine's structured criteria and the latency
    search's importance read these sums.

    Returns:
        kind -> per-layer [groups] float64 tensors (``layers``: one [n_layers] tensor).
    """
    with ExitStack() as stack:
        gates = {kind: stack.enter_context(adapter.gates(kind)) for kind in kinds}
        flat = [g for kind in kinds for g in gates[kind]]
        acc = sum_over_batches(adapter, flat, batches, term, dtype=torch.float64)
    out, start = {}, 0
    for kind in kinds:
        part = acc[start:start + len(gates[kind])]
        start += len(part)
        out[kind] = [torch.cat(part)] if kind == "layers" else part
    return out


class GateCriterion(Criterion):
    """A criterion whose group scores are :func:`gate_sums` of :meth:`gate_term` over labelled calibration
    batches (one backward pass per batch for every kind asked for); subclasses give the term."""

    needs_calibration = True
    needs_labels = True

    def gate_term(self, grad: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """What one batch's gate gradient adds to a group's score."""
        raise NotImplementedError

    def group_scores(
        self, adapter: ArchAdapter, kind: str, calib: Sequence[Batch] | None, seed: int
    ) -> list[torch.Tensor]:
        """The summed term of each group of ``kind``."""
        return self.group_scores_many(adapter, (kind,), calib, seed)[kind]

    def group_scores_many(
        self, adapter: ArchAdapter, kinds: Sequence[str], calib: Sequence[Batch] | None, seed: int
    ) -> dict[str, list[torch.Tensor]]:
        """Scores of several group kinds from one forward/backward pass per calibration batch."""
        batches = check_calib(calib, purpose=f"the {self.name} criterion", labelled=True)
        return gate_sums(adapter, kinds, batches, self.gate_term)
