"""The batch format every part of prunebench exchanges, and the task loss computed on it.

A batch is a ``dict[str, Tensor]``:
    ``input_ids``       [B, S] long token ids
    ``attention_mask``  [B, S] long, 1 for real tokens, 0 for padding
    ``labels``          optional; MLM: [B, S] long, target id at masked positions and -100 elsewhere;
                        classification: [B] long class ids
The pruning engine (calibration, Taylor importance), the tasks (training, evaluation) and the benchmarks
all use this one format, so none of them needs to import another's internals.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Batch = dict[str, torch.Tensor]
IGNORE_INDEX = -100
#: ``loss_fn(model, batch) -> scalar``: the task loss of a model without one of its own (an HF base encoder's
#: frozen-probe cross-entropy, a distillation loss).
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def task_loss(model: nn.Module, batch: Batch, loss_fn: LossFn | None = None) -> torch.Tensor:
    """Scalar task loss of ``model`` on a labelled batch: ``loss_fn`` when given, else its adapter's ``loss``
    (see ``ArchAdapter.loss``). The one definition the engine, the search and the tasks share.

    Raises:
        ValueError: the batch has no ``labels``, or no adapter understands ``model``.
    """
    if loss_fn is not None:
        return loss_fn(model, batch)
    from prunebench.models.adapters import adapter_for  # the adapters import this module's Batch

    return adapter_for(model).loss(batch)
