"""``activation``: how much each head and FFN neuron adds to the residual stream on real calibration text.

Weight magnitude says little about which heads and neurons a pretrained model relies on; what a group
writes on real text does better (measured on MiniLM: the embedding keeps a cosine of 0.64 to dense after
50% one-shot structured pruning by these scores, 0.55 by weight magnitude). Per layer, over real tokens:

    head h      mean of ``|| ctx_h @ W_O[:, h] ||``: its context vectors through its slice of the attention
                output projection (the adapter's ``output_linear("heads", i)``)
    neuron j    ``mean |a_j| * || W_out[:, j] ||``: its activation times its column of the FFN output
                projection (``output_linear("neurons", i)``)

summed over calibration batches (each batch's mean over its real tokens). Needs no labels and no gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch

from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.calibration import check_calib, tap_linears
from prunebench.pruning.criteria.base import Criterion, register_criterion

#: Group kinds with one output projection to read contributions at (a layer has none).
KINDS = ("heads", "neurons")


class Activation(Criterion):
    """Mean contribution to the residual stream on calibration text (heads and neurons)."""

    name = "activation"
    description = "heads and neurons by their mean contribution to the residual stream on calibration text"
    needs_calibration = True
    methods = ("structured",)

    def group_scores(
        self, adapter: ArchAdapter, kind: str, calib: Sequence[Batch] | None, seed: int
    ) -> list[torch.Tensor]:
        """Per layer, the mean contribution of every group of ``kind`` (``heads`` or ``neurons``)."""
        return self.group_scores_many(adapter, (kind,), calib, seed)[kind]

    @torch.no_grad()
    def group_scores_many(
        self, adapter: ArchAdapter, kinds: Sequence[str], calib: Sequence[Batch] | None, seed: int
    ) -> dict[str, list[torch.Tensor]]:
        """Scores of every kind asked for, from one forward pass per calibration batch: the output projections'
        inputs at real tokens, read by :func:`~prunebench.pruning.calibration.tap_linears`."""
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise ValueError(f"criterion {self.name!r} scores heads and neurons, not {', '.join(bad)}; "
                             f"use granularity heads, neurons or both")
        batches = check_calib(calib, purpose=f"the {self.name} criterion")
        n = adapter.n_layers
        scores = {k: [torch.zeros(adapter.group_count(k, i), dtype=torch.float64) for i in range(n)] for k in kinds}
        linears = {(k, i): adapter.output_linear(k, i) for k in kinds for i in range(n) if adapter.group_count(k, i)}
        # Per projection, what turns its input rows [n, width] into per-group contributions [n, groups].
        weights = {key: _contribution(key[0], lin.weight.detach(), adapter.group_count(*key))
                   for key, lin in linears.items()}

        def add(key: Hashable, rows: torch.Tensor) -> None:
            kind, layer = key  # type: ignore[misc]
            if len(rows):
                scores[kind][layer] += weights[key](rows).mean(dim=0).double().cpu()  # this batch's token mean

        tap_linears(adapter, linears, batches, add, what="in")
        return {k: [s.float() for s in per_layer] for k, per_layer in scores.items()}


def _contribution(kind: str, weight: torch.Tensor, groups: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``rows [n, width] -> [n, groups]``: each group's write into the residual stream, as a norm."""
    if kind == "heads":
        w = weight.view(weight.shape[0], groups, weight.shape[1] // groups)  # [D, H, Dh]
        return lambda rows: torch.einsum("nhk,dhk->nhd", rows.view(len(rows), groups, -1), w).norm(dim=-1)
    col = weight.norm(dim=0)  # [F]
    return lambda rows: rows.abs() * col


register_criterion(Activation())
