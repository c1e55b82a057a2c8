"""Criteria as registered objects: importance scores, higher = keep. Scores never modify the model.

Per-weight scores (unstructured, N:M) and per-group scores (structured: heads, neurons, layers):
    l1      |W|                                  L1 norm of the group's weights
    l2      W^2                                  L2 norm of the group's weights
    taylor  |W * sum_batches dL/dW|              sum_batches |dL/dgate| (Michel et al. 2019)
    wanda   |W_ij| * ||X_j||_2 (Sun et al. 2023) -
    random  uniform noise from ``seed``          the same, per group (a control)
    fisher  (W * dL/dW)^2                         sum_batches (dL/dgate)^2 (added: ``fisher.py``)
    activation  -                                 mean contribution to the residual stream (``activation.py``)

One file per criterion. The built-ins are imported first (their order is the listing order); any other
module of this package is imported after them, so adding a criterion is one new file that calls
:func:`register_criterion` (plus its test). Code elsewhere asks a criterion what it needs
(``needs_calibration``, ``needs_labels``) and never compares its name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence

import torch

from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.criteria.base import (
    CRITERIA,
    Criterion,
    criteria_for,
    get_criterion,
    loss_change_criteria,
    register_criterion,
)

#: Built-in criteria in listing order (``choose from`` messages and ``prunebench list criteria`` follow it).
BUILT_IN = ("l1", "l2", "taylor", "wanda", "random")
for _name in BUILT_IN:
    importlib.import_module(f"{__name__}.{_name}")
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in (*BUILT_IN, "base"):
        importlib.import_module(f"{__name__}.{_info.name}")

from prunebench.pruning.criteria.wanda import wanda_scores  # noqa: E402  (after registration, by design)


def weight_scores(
    adapter: ArchAdapter, criterion: str, calib: Sequence[Batch] | None = None, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Per-weight scores of the criterion called ``criterion`` (a ValueError lists the valid names)."""
    return get_criterion(criterion).weight_scores(adapter, calib, seed)


def group_scores(
    adapter: ArchAdapter, kind: str, criterion: str, calib: Sequence[Batch] | None = None, seed: int = 0
) -> list[torch.Tensor]:
    """Per-group scores of the criterion called ``criterion`` (a ValueError lists the valid names)."""
    return get_criterion(criterion).group_scores(adapter, kind, calib, seed)


__all__ = [
    "CRITERIA",
    "Criterion",
    "criteria_for",
    "get_criterion",
    "group_scores",
    "loss_change_criteria",
    "register_criterion",
    "wanda_scores",
    "weight_scores",
]
