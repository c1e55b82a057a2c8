"""Uniform structured shrinking of Hugging Face encoders by group scores, with the least-squares refit.

The scores are any registered criterion's group scores (:mod:`prunebench.pruning.criteria`; the HF run uses
``activation``, each group's mean contribution to the residual stream on real text). :func:`shrink_uniform_`
keeps the same fraction of heads and of neurons in every layer (the top-scored ones) and removes the rest
physically through the adapter, so every layer keeps one shape and the HF config can still describe the FFN
width; :func:`shrink_refit_` then refits the shrunk output projections (:mod:`prunebench.pruning.refit`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from prunebench.models.batch import Batch
from prunebench.pruning.refit import refit_outputs_


def top_k(scores: torch.Tensor, keep: int) -> list[int]:
    """Indices of the ``keep`` highest scores, ascending (ties broken by index)."""
    order = sorted(range(len(scores)), key=lambda j: (-float(scores[j]), j))
    return sorted(order[:keep])


def shrink_uniform_(adapter: Any, sparsity: float, scores: dict[str, list[torch.Tensor]],
                    kinds: Sequence[str] = ("heads", "neurons")) -> dict[str, list[list[int]]]:
    """Keep ``round((1 - sparsity) * n)`` of each ``kind`` per layer (at least one head), the top-scored.

    Returns the kept indices per kind and layer (a plan that can be replayed with ``keep_groups_``).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    kept: dict[str, list[list[int]]] = {}
    for kind in kinds:
        kept[kind] = []
        for i in range(adapter.n_layers):
            n = adapter.group_count(kind, i)
            keep = max(1 if kind == "heads" else 0, math.floor((1.0 - sparsity) * n + 0.5))
            idx = top_k(scores[kind][i], keep)
            kept[kind].append(idx)
            if len(idx) != n:
                adapter.keep_groups_(kind, i, idx)
    return kept


@torch.no_grad()
def shrink_refit_(adapter: Any, dense: Any, sparsity: float, scores: dict[str, list[torch.Tensor]],
                  calib: Sequence[Batch], ridge: float = 1e-3) -> dict[str, list[list[int]]]:
    """:func:`shrink_uniform_`, then the least-squares refit of every shrunk output projection
    (:func:`prunebench.pruning.refit.refit_outputs_`: layer by layer, to the *dense* model's outputs, from the
    inputs the pruned model now produces), a plain ridge of ``ridge * mean(diag(X^T X))``. Needs more
    calibration tokens than kept groups' width (hundreds of short texts suffice).

    Args:
        adapter: adapter of the model to shrink (in place); ``dense``: adapter of an unpruned copy.
    """
    if not calib:
        raise ValueError("refitting needs calibration batches")
    kept = shrink_uniform_(adapter, sparsity, scores)
    refit_outputs_(adapter, dense, calib, ridge=ridge, prior="zero")
    return kept
