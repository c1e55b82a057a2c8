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

import torch
import torch.nn.functional as F

from prunebench.models.config import TaskHead
from prunebench.models.encoder import TransformerEncoder

Batch = dict[str, torch.Tensor]
IGNORE_INDEX = -100


def task_loss(model: TransformerEncoder, batch: Batch) -> torch.Tensor:
    """Cross-entropy of the model's head on a labelled batch (scalar).

    For MLM, logits are computed only at labelled positions: the vocabulary projection is by far the
    largest matmul of a small encoder, and the other 85% of positions carry no loss.

    Raises:
        ValueError: the batch has no ``labels``.
    """
    if "labels" not in batch:
        raise ValueError("this batch has no 'labels'; a task loss needs labelled batches")
    hidden = model.encode(batch["input_ids"], batch.get("attention_mask"))  # [B, S, D]
    labels = batch["labels"]
    if model.head_kind is TaskHead.MLM:
        where = labels != IGNORE_INDEX  # [B, S]
        logits = model.mlm_logits(hidden[where])  # [N, V]
        return F.cross_entropy(logits, labels[where])
    logits = model.classify(hidden, batch.get("attention_mask"))  # [B, C]
    return F.cross_entropy(logits, labels)
