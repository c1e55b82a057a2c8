"""The whole-model check of the ``sparse`` backend: a token count keeps its sparse kernels only if the model wins.

Per-Linear micro-benchmarks do not add up to the model: a CSR product returns its output transposed (a strided
view), which the next operations (attention, GELU, the residual add) then read more slowly, and caches hold
other data in the model than in a loop over one Linear. Measured on ``medium`` at 90% magnitude, 2 threads: every
Linear's CSR kernel beat dense at 512 tokens in isolation, yet the model ran at 0.97x [0.95-0.99] of dense on
zeros at B=4. So after the per-Linear choice, each token count is timed once more as a whole model (the sparse
copy against the same model with dense kernels, paired, at the real input shape); when the CI's lower bound
does not clear ``1 + margin``, a smaller set is tried (only the Linears whose own kernel won by
``1 + fallback_margin``), and when that fails too the token count runs dense kernels everywhere. A token count
that runs dense everywhere computes exactly what ``zeros`` does, which is what makes ``sparse`` never slower
than ``zeros`` by construction; every measurement is kept in the runnable's ``info``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from prunebench.backends.torch_backends import hidden_fn
from prunebench.bench.inputs import make_inputs
from prunebench.bench.records import PairedResult
from prunebench.models.adapters import find_adapter

#: Budget of one whole-model check (``time_paired`` keyword arguments); a check that stays noisy keeps dense.
GUARD_TIMING: dict[str, Any] = {"warmup": 2, "min_time": 0.5, "min_pairs": 8, "max_time": 4.0, "target_ci": 0.03}


def _vocab(model: nn.Module) -> int:
    adapter = find_adapter(model)
    # Without an adapter ids 0/1 still drive the same kernels: a Linear's cost does not depend on the values.
    return adapter.vocab_size if adapter is not None else 2


def _summary(res: PairedResult) -> dict[str, Any]:
    return {"speedup": round(res.speedup, 4), "ci": [round(res.ci_low, 4), round(res.ci_high, 4)],
            "n_pairs": res.n_pairs, "dense_ms": round(res.baseline.median * 1e3, 3),
            "sparse_ms": round(res.candidate.median * 1e3, 3), "stop_reason": res.stop_reason}


def guard_token_counts(
    sparse_model: nn.Module,
    dense_model: nn.Module,
    formats: dict[str, dict[int, str]],
    micro_low: dict[str, dict[int, float]],
    shapes: Sequence[tuple[int, int]],
    *,
    timer: Callable[..., PairedResult],
    threads: int | None,
    seed: int = 0,
    margin: float = 0.0,
    fallback_margin: float = 0.25,
    timing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Time each token count's sparse choice on the whole model and drop it where the model is not faster.

    Args:
        sparse_model: the prepared copy; its SparseLinears read ``formats`` (the same dicts), edited in place.
        dense_model: the same model with dense kernels (the model ``sparse`` was prepared from).
        formats: Linear name -> its SparseLinear's token count -> format map (edited in place).
        micro_low: Linear name -> token count -> the CI lower bound of its own kernel's speedup.
        shapes: the ``(batch_size, seq_len)`` shapes that will be timed; each token count is checked at the first.
        timer: ``time_paired`` (tests inject a fake).
        threads, seed: as in ``time_paired``.
        margin: the whole model must be faster by more than this (CI lower bound) to keep a sparse choice.
        fallback_margin: the smaller set tried after a failed check keeps the Linears whose own kernel's CI
            lower bound cleared ``1 + fallback_margin``.
        timing: overrides of :data:`GUARD_TIMING`.

    Returns:
        Per token count (as a string): the shape, each measured attempt and what was kept.
    """
    budget = {**GUARD_TIMING, **(timing or {})}
    dense_fn, sparse_fn = hidden_fn(dense_model), hidden_fn(sparse_model)
    record: dict[str, Any] = {}
    first: dict[int, tuple[int, int]] = {}
    for b, s in shapes:
        first.setdefault(b * s, (b, s))
    for batch_size, seq_len in first.values():
        tokens = batch_size * seq_len
        users = {n: f[tokens] for n, f in formats.items() if tokens in f}
        entry: dict[str, Any] = {"batch_size": batch_size, "seq_len": seq_len, "attempts": []}
        record[str(tokens)] = entry
        if not users:
            entry.update(kept="dense", why="no Linear's own kernel was faster")
            continue
        ids = make_inputs(_vocab(dense_model), batch_size, seq_len, seed=seed, device=_device(dense_model))["input_ids"]
        strong = {n for n in users if micro_low.get(n, {}).get(tokens, 0.0) > 1.0 + fallback_margin}
        attempts = [("chosen", set(users))] + ([("strong", strong)] if strong and strong != set(users) else [])
        entry["kept"] = "dense"
        for label, names in attempts:
            for n in formats:  # this attempt's set only
                if n in names:
                    formats[n][tokens] = users[n]
                else:
                    formats[n].pop(tokens, None)
            with torch.inference_mode():
                res = timer(lambda ids=ids: dense_fn(ids, None), lambda ids=ids: sparse_fn(ids, None), threads=threads,
                            seed=seed, **budget)
            entry["attempts"].append({"set": label, "linears": len(names), **_summary(res)})
            if res.ci_low > 1.0 + margin:
                entry["kept"] = label
                break
        if entry["kept"] == "dense":
            for f in formats.values():
                f.pop(tokens, None)
            entry["why"] = f"the whole model's CI lower bound did not clear {1.0 + margin:g}"
    return record


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
