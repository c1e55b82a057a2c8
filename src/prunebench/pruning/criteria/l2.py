"""``l2``: W^2 per weight (the same ranking as l1 per weight); the L2 norm of a group's weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.criteria.base import Criterion, register_criterion
from prunebench.pruning.criteria.l1 import norm_group_scores


class L2(Criterion):
    """Squared magnitude per weight; for groups it differs from l1 (large weights count more)."""

    name = "l2"
    description = "W^2 per weight; L2 norm of a group's weights"
    methods = ("magnitude", "structured", "nm")

    def weight_scores(
        self, adapter: ArchAdapter, calib: Sequence[Batch] | None, seed: int
    ) -> dict[str, torch.Tensor]:
        """W^2 of every prunable Linear."""
        return {n: lin.weight.detach().pow(2) for n, lin in adapter.prunable_linears().items()}

    def group_scores(
        self, adapter: ArchAdapter, kind: str, calib: Sequence[Batch] | None, seed: int
    ) -> list[torch.Tensor]:
        """L2 norm of each group's weights."""
        return norm_group_scores(adapter, kind, square=True)


register_criterion(L2())
