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

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch import nn

Batch = dict[str, torch.Tensor]
IGNORE_INDEX = -100


def task_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Scalar task loss of ``model`` on a labelled batch: its adapter's ``loss`` (see ``ArchAdapter.loss``).

    Raises:
        ValueError: the batch has no ``labels``, or no adapter understands ``model``.
    """
    from prunebench.models.adapters import adapter_for  # the adapters import this module's Batch

    return adapter_for(model).loss(batch)
