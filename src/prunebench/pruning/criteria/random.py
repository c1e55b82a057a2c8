"""``random``: uniform noise from ``seed``, a control every real criterion should beat."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.criteria.base import Criterion, register_criterion


class Random(Criterion):
    """Seeded uniform scores (the same seed gives the same selection)."""

    name = "random"
    description = "uniform noise from the seed (a control)"
    methods = ("magnitude", "structured")

    def weight_scores(
        self, adapter: ArchAdapter, calib: Sequence[Batch] | None, seed: int
    ) -> dict[str, torch.Tensor]:
        """U(0, 1) per weight, drawn in module order from one generator."""
        gen = torch.Generator().manual_seed(seed)
        return {
            n: torch.rand(lin.weight.shape, generator=gen).to(lin.weight.device)
            for n, lin in adapter.prunable_linears().items()
        }

    def group_scores(
        self, adapter: ArchAdapter, kind: str, calib: Sequence[Batch] | None, seed: int
    ) -> list[torch.Tensor]:
        """U(0, 1) per group."""
        gen = torch.Generator().manual_seed(seed)
        L = adapter.n_layers
        sizes = [L] if kind == "layers" else [adapter.group_count(kind, i) for i in range(L)]
        return [torch.rand(n, generator=gen) for n in sizes]


register_criterion(Random())
