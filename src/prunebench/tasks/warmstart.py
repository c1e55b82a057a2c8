"""Initialization choices for training a baseline from scratch in a few minutes of CPU time.

Masked-LM training first learns token frequencies, then sits on a plateau (predict the most frequent
token) until attention learns to look at neighbouring positions; with a budget of a few hundred steps the
plateau is most of the run. Two init choices shorten it without changing the architecture:

* the MLM output bias starts at the log-frequencies of the training tokens (the plateau's solution), and
* the learned position table starts as sinusoids, so a relative offset is a linear function that attention
  can pick up at once instead of discovering it from random vectors.
"""

from __future__ import annotations

import math

import torch

from prunebench.models.config import TaskHead
from prunebench.models.encoder import TransformerEncoder
from prunebench.tasks.base import Task

#: Same scale as the encoder's normal(0, 0.02) init, so the residual stream starts as it would otherwise.
POSITION_STD = 0.02


def sinusoids(n_positions: int, dim: int) -> torch.Tensor:
    """[P, D] sin/cos table with geometric wavelengths (unit RMS per row)."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # [P, 1]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # [D/2]
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table.float()


@torch.no_grad()
def warm_start_(model: TransformerEncoder, task: Task) -> None:
    """Apply the init choices above in place (call before training a fresh model, never on a trained one)."""
    table = model.embed_positions.weight  # [P, D]
    table.copy_(sinusoids(table.shape[0], table.shape[1]) * POSITION_STD * math.sqrt(2.0))
    if model.head_kind is TaskHead.MLM:
        ids = task.split("train").input_ids.flatten()  # [N*S]
        counts = torch.bincount(ids, minlength=model.mlm_bias.numel()).double()[: model.mlm_bias.numel()]  # [V]
        counts[:5] = 0.0  # special tokens are never targets
        model.mlm_bias.copy_(torch.log((counts + 1.0) / (counts.sum() + counts.numel())).float())
