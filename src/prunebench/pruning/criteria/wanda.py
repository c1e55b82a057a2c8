"""``wanda``: |W_ij| * ||X_j||_2 (Sun et al. 2023); X = the Linear's inputs on calibration batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.calibration import check_calib, input_sq_norms
from prunebench.pruning.criteria.base import Criterion, register_criterion


def wanda_scores(weight: torch.Tensor, input_sq_sum: torch.Tensor) -> torch.Tensor:
    """Wanda importance ``|W_ij| * ||X_j||_2`` from a weight [out, in] and per-feature sums of squares [in]."""
    # Each input column j of W is scaled by how large feature j is on real data.
    return weight.abs() * input_sq_sum.sqrt()[None, :]  # [out, in]


class Wanda(Criterion):
    """Weights times activation norms: a weight on a feature that is always small matters little."""

    name = "wanda"
    description = "|W| * ||X||_2 from calibration activations (Sun et al. 2023)"
    needs_calibration = True
    methods = ("wanda", "nm")

    def weight_scores(
        self, adapter: ArchAdapter, calib: Sequence[Batch] | None, seed: int
    ) -> dict[str, torch.Tensor]:
        """Wanda scores of every prunable Linear from one pass over ``calib``."""
        batches = check_calib(calib, purpose="the wanda criterion")
        linears = adapter.prunable_linears()
        sq = input_sq_norms(adapter, linears, batches)
        return {n: wanda_scores(lin.weight.detach(), sq[n]) for n, lin in linears.items()}


register_criterion(Wanda())
