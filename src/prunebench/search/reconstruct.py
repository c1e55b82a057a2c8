"""Which heads and neurons to keep *given that the output projection is refitted*: greedy group OBS.

Fisher (or Taylor) scores each group alone, with every other group in place and nothing compensating. But
the search refits each layer's output projection after pruning (:mod:`prunebench.search.rescale`), and then
what matters is how well the *kept* groups can stand in for the removed ones: two heads that carry the same
signal are each important alone, yet one of them can go at almost no cost once the projection is refitted.

Optimal Brain Surgeon on the layer-wise least squares answers exactly that (Hassibi & Stork 1993; per
structure as in Frantar & Alistarh 2022, "Optimal Brain Compression", and ZipLM, Kurtic et al. 2023). For an
output projection ``W`` [D, k] whose inputs ``X`` [N, k] come from calibration tokens, with ``H = X^T X`` and
``Hinv = H^-1``, removing the input group ``G`` and optimally updating the rest of ``W`` raises the
reconstruction error ``||X W^T - X W'^T||^2`` by

    err(G) = trace( W_G (Hinv_GG)^-1 W_G^T )          W_G [D, |G|]: the group's columns

after which ``W -= W_G (Hinv_GG)^-1 Hinv_G:`` and ``Hinv -= Hinv_:G (Hinv_GG)^-1 Hinv_G:``. Removing the
cheapest group, updating and repeating gives every layer a *removal order* (a head is a group of
``head_dim`` columns, a neuron a single column), hence nested kept sets for every width the search may pick.

Measured (``python benchmarks/search_keep.py``: all-MiniLM-L6-v2, tweets probe, dense 71.05%, the widths of
a searched 1.5x model held fixed, refit on): keeping the OBS sets instead of the top-Fisher ones raises the
probe from 68.1% to 70.65% (cosine to dense 0.87 -> 0.91), and from 67.0% to 70.1% at the widths of an
earlier search (``--widths-from`` that run's JSON). Without the refit the OBS sets are 10.7 pp worse than
Fisher's at the earlier widths (52.85% vs 63.5%) though 6.2 pp better at the later ones: they assume the
compensation, which is why the search uses them by default only when rescaling is on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunebench.models.batch import Batch
from prunebench.pruning.calibration import tap_linears
from prunebench.search._arch import adapter_of, full_widths
from prunebench.search.importance import SEARCH_KINDS

#: Dampening added to ``H``'s diagonal, relative to its mean (keeps ``H`` invertible for dead inputs).
DAMP = 0.01
#: Single columns removed per step: ``alive // BATCH_DIVISOR`` (see :func:`removal_order`).
BATCH_DIVISOR = 64


def input_gram(model: nn.Module, batches: Sequence[Batch]) -> dict[tuple[str, int], torch.Tensor]:
    """``X^T X`` [k, k] (float64) of every output projection's inputs at real (unpadded) tokens of ``batches``.

    One forward pass per batch; the Gram matrices are accumulated in the hooks, so the activations of the
    whole calibration set are never held at once.
    """
    adapter = adapter_of(model)
    linears = {(kind, i): adapter.output_linear(kind, i) for i in range(adapter.n_layers) for kind in SEARCH_KINDS}
    grams = {key: torch.zeros(lin.in_features, lin.in_features, dtype=torch.float64) for key, lin in linears.items()}

    def accumulate(key: tuple[str, int], rows: torch.Tensor) -> None:
        rows = rows.double().cpu()  # [n, k]
        grams[key] += rows.T @ rows

    tap_linears(model, linears, batches, accumulate)
    return grams


def removal_order(weight: torch.Tensor, gram: torch.Tensor, n_groups: int, *, damp: float = DAMP,
                  batch_divisor: int = BATCH_DIVISOR) -> list[int]:
    """Groups of ``weight``'s input columns in the order greedy OBS removes them (first = cheapest).

    Args:
        weight: [D, k] the output projection; its ``k`` inputs form ``n_groups`` contiguous groups.
        gram: [k, k] ``X^T X`` of its inputs.
        n_groups: number of equal groups (heads, or ``k`` for single neurons).
        damp: diagonal dampening relative to the mean diagonal.
        batch_divisor: single columns are removed ``alive // batch_divisor`` at a time (at least one), the
            cheapest ones by the current scores, with one joint update: exact greedy removes one per step,
            which costs a [k, k] update each time (10-13 s for MiniLM's 1536-wide FFN at 1 thread, 1.4-1.5 s
            batched, reconstruction error 0.04% higher: ``benchmarks/search_keep.py``); removing a small
            fraction per step takes about ``batch_divisor * ln(k)`` steps instead. Groups (heads) go one by one.

    Returns:
        All ``n_groups`` indices; the last one is the group worth keeping most.
    """
    k = weight.shape[1]
    if n_groups < 1 or k % n_groups:
        raise ValueError(f"{k} input columns do not split into {n_groups} equal groups")
    size = k // n_groups
    w = weight.detach().double().cpu().clone()  # [D, m]: the columns still alive (compacted as they go)
    h = gram.double().clone()
    h += damp * float(h.diagonal().mean().clamp_min(1e-12)) * torch.eye(k, dtype=torch.float64)
    hinv = torch.linalg.inv(h)  # [m, m]
    alive = list(range(n_groups))  # group ids, in the order of the compacted columns
    order: list[int] = []
    while len(alive) > 1:
        if size == 1:
            scores = (w**2).sum(0) / hinv.diagonal()  # [m]: error of removing each column alone
            take = max(1, min(len(alive) - 1, len(alive) // batch_divisor))
            picks = torch.argsort(scores)[:take].tolist()  # positions in the compacted columns, cheapest first
        else:
            errs = []
            for g in range(len(alive)):
                c = slice(g * size, (g + 1) * size)
                errs.append(float(torch.einsum("dg,gh,dh->", w[:, c], torch.linalg.inv(hinv[c, c]), w[:, c])))
            picks = [min(range(len(alive)), key=errs.__getitem__)]
        cols = torch.tensor([c for p in picks for c in range(p * size, (p + 1) * size)])
        inv_jj = torch.linalg.inv(hinv[cols][:, cols])  # [j, j]
        w -= w[:, cols] @ inv_jj @ hinv[cols, :]  # the optimal update of the other columns
        hinv -= hinv[:, cols] @ inv_jj @ hinv[cols, :]
        order.extend(alive[p] for p in picks)
        gone = set(picks)
        stay = [g for g in range(len(alive)) if g not in gone]
        keep = torch.tensor([c for g in stay for c in range(g * size, (g + 1) * size)])
        w, hinv = w[:, keep], hinv[keep][:, keep]  # drop the removed columns (their rows of H^-1 are done)
        alive = [alive[g] for g in stay]
    return order + alive


def reconstruction_orders(model: nn.Module, batches: Sequence[Batch]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Per kind (``heads``, ``neurons``) and layer, the groups from most to least worth keeping (greedy OBS).

    Args:
        model: the dense model (unchanged).
        batches: calibration batches (labels unused).
    """
    adapter = adapter_of(model)
    full = full_widths(adapter)
    grams = input_gram(model, batches)
    out: dict[str, list[tuple[int, ...]]] = {kind: [] for kind in SEARCH_KINDS}
    for i, (n_heads, n_neurons) in enumerate(full):
        for kind, n in (("heads", n_heads), ("neurons", n_neurons)):
            lin = adapter.output_linear(kind, i)
            out[kind].append(tuple(reversed(removal_order(lin.weight, grams[(kind, i)], n))))
    return {kind: tuple(orders) for kind, orders in out.items()}
