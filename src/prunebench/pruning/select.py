"""Selection: importance scores (higher = keep) -> keep-masks or kept group indices.

Counts follow ``torch.nn.utils.prune``: ``round(sparsity * n)`` elements go (Python rounding), and the
lowest scores of the flattened tensor go, so magnitude masks match ``l1_unstructured`` /
``global_unstructured`` exactly (up to the order in which exact ties are broken).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def prune_count(n: int, sparsity: float) -> int:
    """How many of ``n`` elements a ``sparsity`` removes."""
    return min(n, round(sparsity * n))


def _mask_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask of ``scores``' shape with exactly the ``k`` lowest entries False.

    A k-th value threshold (linear-time selection) instead of ``topk``, which is several times slower on
    large tensors. Without ties the pruned set is the same as ``topk(largest=False)``'s; entries tied at
    the threshold are pruned in index order until exactly ``k`` are gone.
    """
    flat = scores.reshape(-1)
    if k <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if k >= flat.numel():
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(flat, k).values
    keep = flat > threshold  # [n]; ties at the threshold are all dropped here ...
    if flat.numel() - int(keep.sum()) != k:
        tied = torch.nonzero(flat == threshold).reshape(-1)
        surplus = k - int((flat < threshold).sum())  # ... but only this many of them must go
        keep[tied[surplus:]] = True
    return keep.reshape(scores.shape)


def layer_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Every tensor pruned to ``sparsity`` on its own."""
    return {name: _mask_lowest(s, prune_count(s.numel(), sparsity)) for name, s in scores.items()}


def global_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """One threshold across all tensors (concatenated in dict order, as ``global_unstructured`` does)."""
    flat = torch.cat([s.reshape(-1) for s in scores.values()])  # [sum numel]
    keep = _mask_lowest(flat, prune_count(flat.numel(), sparsity))
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start:start + s.numel()].reshape(s.shape)
        start += s.numel()
    return out


def row_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Each output row ([out, in] weights) pruned to ``sparsity`` separately (Wanda's comparison group)."""
    out = {}
    for name, s in scores.items():
        mask = torch.ones_like(s, dtype=torch.bool)  # [out, in]
        k = prune_count(s.shape[1], sparsity)
        if k > 0 and s.shape[0] > 0:
            idx = torch.topk(s, k=k, dim=1, largest=False).indices  # [out, k]
            mask.scatter_(1, idx, False)
        out[name] = mask
    return out


def nm_masks(scores: dict[str, torch.Tensor], n: int, m: int) -> dict[str, torch.Tensor]:
    """In every run of ``m`` consecutive input weights of a row keep the ``n`` best.

    A trailing partial group (``in_features % m`` columns) is left dense: it is not an N:M group, and
    the report's measured sparsity shows the difference.

    Raises:
        ValueError: ``m`` is wider than every layer's input, so no group exists and nothing would be pruned
            (``--n 1 --m 100000`` was saved as "99.999% sparse" with every weight kept).
    """
    widest = max((s.shape[1] for s in scores.values()), default=0)
    if scores and m > widest:
        raise ValueError(f"N:M group size m={m} is wider than every prunable layer's input (widest {widest}): it "
                         f"would prune nothing; give m <= {widest}, e.g. 2:4")
    out = {}
    for name, s in scores.items():
        rows, cols = s.shape
        full = (cols // m) * m
        mask = torch.ones_like(s, dtype=torch.bool)  # [out, in]
        if full > 0 and rows > 0:
            groups = s[:, :full].reshape(rows, full // m, m)  # [out, in/m, m]
            idx = torch.topk(groups, k=n, dim=2).indices  # [out, in/m, n]
            keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, idx, True)
            mask[:, :full] = keep.reshape(rows, full)
        out[name] = mask
    return out


def _round_kept(kept: int, n: int, round_to: int, allow_empty: bool) -> int:
    """Nearest multiple of ``round_to`` to ``kept`` within the allowed range (``n`` if there is none)."""
    if round_to == 1 or kept == n:
        return kept
    lo = 0 if allow_empty else round_to
    candidates = list(range(lo, n + 1, round_to))
    if not candidates:
        return n
    return min(candidates, key=lambda c: (abs(c - kept), -c))


def select_groups(
    scores: Sequence[torch.Tensor],
    sparsity: float,
    scope: str,
    *,
    what: str,
    allow_empty: bool = False,
    round_to: int = 1,
    prior: Sequence[Sequence[int]] | None = None,
) -> list[tuple[int, ...]]:
    """Kept group indices per layer.

    Args:
        scores: per layer, a [groups] tensor of importances (higher = keep).
        sparsity: fraction of all groups to remove.
        scope: ``layer`` (each layer loses ``round(sparsity * n)``) or ``global`` (one ranking).
        what: group name for messages (``head``, ``neuron``).
        allow_empty: a layer may lose every group; otherwise each non-empty layer keeps its best one.
        round_to: kept counts are rounded to multiples of this where possible.
        prior: kept indices of an earlier step; groups outside it stay removed (masks only grow).

    Raises:
        ValueError: the request would remove every group of every layer.
    """
    counts = [int(s.numel()) for s in scores]
    total = sum(counts)
    if total == 0:
        return [() for _ in scores]
    scores = [s.detach().float().clone() for s in scores]
    if prior is not None:
        for s, kept in zip(scores, prior, strict=True):
            gone = torch.ones_like(s, dtype=torch.bool)
            gone[list(kept)] = False
            s[gone] = float("-inf")  # removed earlier: always among the lowest now
    if scope == "layer":
        requested = [prune_count(n, sparsity) for n in counts]
    else:
        requested = [prune_count(total, sparsity)]
    if sum(requested) >= total:
        raise ValueError(
            f"sparsity {sparsity:g} would remove every {what} of every layer; lower it (at least one must remain)"
        )
    if scope == "layer":
        kept_counts = [n - r for n, r in zip(counts, requested, strict=True)]
    else:
        ranked = [s.clone() for s in scores]
        if not allow_empty:
            for s in ranked:
                if s.numel() > 0:
                    s[torch.argmax(s)] = float("inf")  # each layer's best group is protected
        flat = torch.cat(ranked)
        k = min(requested[0], int((flat != float("inf")).sum()))  # protected groups never go
        keep = _mask_lowest(flat, k)
        kept_counts, start = [], 0
        for n in counts:
            kept_counts.append(int(keep[start:start + n].sum()))
            start += n
    out = []
    for s, n, kept in zip(scores, counts, kept_counts, strict=True):
        if n == 0:
            out.append(())
            continue
        if not allow_empty:
            kept = max(kept, 1)
        kept = _round_kept(kept, n, round_to, allow_empty)
        idx = torch.topk(s, k=kept).indices if kept > 0 else torch.empty(0, dtype=torch.long)
        chosen = sorted(int(i) for i in idx if s[int(i)] != float("-inf"))
        out.append(tuple(chosen))
    return out
