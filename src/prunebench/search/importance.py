"""Importance of every head and FFN neuron from real calibration data: the pruning criteria's group scores.

The scores come from the criteria registry (:mod:`prunebench.pruning.criteria`), as for every pruning run;
the search accepts the criteria whose group scores are a loss change on one scale for heads and neurons
(``Criterion.loss_change``), so it may trade one for the other. Built in:

    fisher  sum over batches of (dL/dgate)^2   the diagonal empirical Fisher of the gates (Kwon et al. 2022):
                                               ~ twice the loss increase of removing the group, to 2nd order
    taylor  sum over batches of |dL/dgate|     first-order Taylor (Molchanov et al. 2019, Michel et al. 2019)

where the adapter multiplies each group's output by a gate of ones, so ``dLoss/dgate`` of a batch is the
first-order change of the loss if that group were scaled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prunebench.models.adapters import with_loss
from prunebench.models.batch import Batch, LossFn
from prunebench.pruning.criteria import Criterion, get_criterion, loss_change_criteria

#: Kinds of group the search prices and removes.
SEARCH_KINDS = ("heads", "neurons")

CALIB_HELP = (
    "the latency-budget search needs calibration data: pass calib=[labelled batch, ...], e.g. "
    "prunebench.tasks.calibration_batches(task, 256); in the CLI give the model's task (--task mlm | csv:PATH) "
    "and keep --calib-sequences > 0"
)


@dataclass(frozen=True)
class Importance:
    """Per-layer importance of heads and neurons (higher = more costly to remove).

    Attributes:
        heads: per layer a [H] tensor.
        neurons: per layer a [F] tensor.
        criterion: registry name that produced them.
        n_batches: calibration batches used.
        orders: per kind, per layer, the group indices from most to least worth keeping, when something
            other than the scores decides which groups stay (:mod:`prunebench.search.reconstruct`: greedy
            OBS, which accounts for the output projection's refit); None: by descending score.
    """

    heads: tuple[torch.Tensor, ...]
    neurons: tuple[torch.Tensor, ...]
    criterion: str
    n_batches: int
    orders: Mapping[str, tuple[tuple[int, ...], ...]] | None = None

    def of(self, kind: str) -> tuple[torch.Tensor, ...]:
        """The per-layer scores of ``kind`` (``heads`` or ``neurons``)."""
        if kind not in SEARCH_KINDS:
            raise ValueError(f"unknown group kind {kind!r}; choose from: {', '.join(SEARCH_KINDS)}")
        return self.heads if kind == "heads" else self.neurons

    def ranking(self, kind: str, layer: int) -> list[int]:
        """Group indices of ``layer`` from most to least worth keeping (``orders`` if set, else by score;
        ties by index, so it is deterministic)."""
        if self.orders is not None:
            return list(self.orders[kind][layer])
        scores = self.of(kind)[layer]
        return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))

    def kept(self, kind: str, layer: int, count: int) -> tuple[int, ...]:
        """The ``count`` most important groups of ``layer``, in index order."""
        return tuple(sorted(self.ranking(kind, layer)[:count]))

    def retained(self, kind: str, layer: int) -> torch.Tensor:
        """[G + 1] importance kept when keeping the top 0, 1, ..., G groups of :meth:`ranking` (cumulative)."""
        scores = self.of(kind)[layer].double()  # [G]
        s = scores[torch.tensor(self.ranking(kind, layer), dtype=torch.long)]  # [G] in keeping order
        return torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(s, 0)])  # [G + 1]


def check_search_calib(calib: Sequence[Batch] | None) -> list[Batch]:
    """``calib`` as a list of labelled batches, or a one-line ValueError saying how to provide them."""
    if calib is None or len(calib) == 0:
        raise ValueError(CALIB_HELP)
    batches = list(calib)
    for i, batch in enumerate(batches):
        if not isinstance(batch, dict) or "input_ids" not in batch or "labels" not in batch:
            raise ValueError(f"calibration batch {i} is not a labelled batch dict ('input_ids' and 'labels'); "
                             + CALIB_HELP)
    return batches


def search_criterion(name: str) -> Criterion:
    """The registered criterion ``name`` if the search can trade heads for neurons by its scores
    (``loss_change``); a one-line ValueError naming those that it can otherwise."""
    allowed = loss_change_criteria()
    if name not in allowed:
        raise ValueError(f"unknown search criterion {name!r}; choose from: {', '.join(allowed)} "
                         "(criteria whose scores are a loss change, comparable across heads and neurons)")
    return get_criterion(name)


def group_importance(model: nn.Module, calib: Sequence[Batch] | None, criterion: str = "fisher",
                     loss_fn: LossFn | None = None, seed: int = 0) -> Importance:
    """Score every head and neuron of ``model`` on ``calib`` by the registered ``criterion``'s group scores
    (one forward/backward per batch for the gradient criteria; the model is unchanged).

    ``loss_fn`` is the task loss of a model without one (an HF base encoder); None: the adapter's.

    Raises:
        ValueError: no (labelled) calibration data, or a criterion the search cannot use.
    """
    crit = search_criterion(criterion)
    batches = check_search_calib(calib)
    scores = crit.group_scores_many(with_loss(model, loss_fn), SEARCH_KINDS, batches, seed)
    heads, neurons = (tuple(s.double().cpu() for s in scores[kind]) for kind in SEARCH_KINDS)
    return Importance(heads, neurons, criterion, len(batches))
