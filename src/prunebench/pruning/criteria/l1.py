"""``l1``: |W| per weight; the L1 norm of every weight of a group (head, neuron, layer)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.criteria.base import Criterion, register_criterion


def norm_group_scores(adapter: ArchAdapter, kind: str, square: bool) -> list[torch.Tensor]:
    """Per layer, a [groups] norm of each group's weights: L1 (``square=False``) or L2; ``layers`` stacked."""
    per_layer = []
    for i in range(adapter.n_layers):
        parts = adapter.group_weights(kind, i)  # each [groups, elements]
        if square:
            per_layer.append(torch.sqrt(sum(p.detach().pow(2).sum(dim=1) for p in parts)))
        else:
            per_layer.append(sum(p.detach().abs().sum(dim=1) for p in parts))
    return [torch.cat(per_layer)] if kind == "layers" else per_layer


class L1(Criterion):
    """Magnitude: what an untrained eye would remove first."""

    name = "l1"
    description = "|W| per weight; L1 norm of a group's weights"
    methods = ("magnitude", "structured", "nm")

    def weight_scores(
        self, adapter: ArchAdapter, calib: Sequence[Batch] | None, seed: int
    ) -> dict[str, torch.Tensor]:
        """|W| of every prunable Linear."""
        return {n: lin.weight.detach().abs() for n, lin in adapter.prunable_linears().items()}

    def group_scores(
        self, adapter: ArchAdapter, kind: str, calib: Sequence[Batch] | None, seed: int
    ) -> list[torch.Tensor]:
        """L1 norm of each group's weights."""
        return norm_group_scores(adapter, kind, square=False)


register_criterion(L1())
