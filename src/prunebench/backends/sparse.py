"""The ``sparse`` backend: unstructured-pruned Linears run as CSR/BSR kernels where, and only where, that is faster.

Sparse kernels beat a dense GEMM only at high sparsity and few tokens (measured on ``medium``, 90% zeros, 2
threads: CSR 2.4x faster than dense for the 1536x512 qkv projection at 128 tokens, 0.9-1.1x at 2048 tokens,
and BSR slower everywhere for unstructured zeros). So the format of each Linear is chosen by a paired
micro-benchmark at the token counts the run will time (``batch_size * seq_len`` of every shape): a Linear
switches to a sparse format at a token count only where the whole confidence interval of its speedup over
the dense kernel lies above ``1 + margin``. Those choices are then checked on the whole model at each token
count (:mod:`prunebench.backends.sparse_guard`): where the sparse copy is not faster than the same model on
dense kernels, that token count runs the dense kernel in every Linear, i.e. exactly what ``zeros`` runs. That
fallback is what makes ``sparse`` never slower than ``zeros`` by construction (up to one dictionary lookup per
Linear call); both measurements are kept in the runnable's ``info`` (``linears``, ``whole_model``).

The replaced Linears keep their dense weight too (for the token counts that stay dense), so the prepared copy
holds more parameter memory than the model; the peak-memory figure counts activations only, as for eager.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.backends.base import FP32, PrepareOptions, Runnable
from prunebench.backends.sparse_guard import guard_token_counts
from prunebench.backends.torch_backends import _prunable_linears, torch_runnable
from prunebench.bench.records import PairedResult
from prunebench.bench.timing import pinned_threads, time_paired

logger = logging.getLogger(__name__)

#: Block sizes tried for BSR (square blocks); only where few enough blocks hold a non-zero for it to pay.
BSR_BLOCKS = (8, 16, 32)


def zero_fraction(weight: torch.Tensor) -> float:
    """Fraction of exactly-zero entries of ``weight`` (0 for an empty tensor)."""
    if weight.numel() == 0:
        return 0.0
    return 1.0 - int(torch.count_nonzero(weight)) / weight.numel()


def block_density(weight: torch.Tensor, block: int) -> float | None:
    """Fraction of ``block x block`` tiles holding a non-zero, or None when the shape does not tile."""
    rows, cols = weight.shape
    if rows % block or cols % block:
        return None
    tiles = weight.reshape(rows // block, block, cols // block, block).ne(0).any(dim=3).any(dim=1)  # [R/b, C/b]
    return float(tiles.float().mean())


def _sparse_matmul(weight_sp: torch.Tensor, bias: torch.Tensor | None, x2: torch.Tensor) -> torch.Tensor:
    """``x2 @ W.T + b`` with a sparse ``W`` [out, in]: x2 [T, in] -> [T, out] (sparse @ dense, then transposed)."""
    if bias is None:
        return torch.mm(weight_sp, x2.t()).t()  # [T, out]
    return torch.addmm(bias[:, None], weight_sp, x2.t()).t()  # [out, T] -> [T, out]


class SparseLinear(nn.Module):
    """A Linear that uses a sparse copy of its weight for the token counts in ``formats``.

    Args:
        linear: the Linear to replace (its weight and bias are shared, not copied).
        formats: token count T -> format name (``csr``, ``bsr16``, ...); other T run dense.
        sparse_weights: format name -> the weight in that layout.
    """

    def __init__(self, linear: nn.Linear, formats: dict[int, str], sparse_weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.formats = dict(formats)
        # Plain attributes, not buffers: they are a derived execution format and are not saved.
        self.sparse_weights = dict(sparse_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., in] -> [..., out]."""
        tokens = x.numel() // self.in_features if self.in_features else 0
        fmt = self.formats.get(tokens)
        if fmt is None:
            return F.linear(x, self.weight, self.bias)
        x2 = x.reshape(tokens, self.in_features)  # [T, in]
        y = _sparse_matmul(self.sparse_weights[fmt], self.bias, x2)  # [T, out]
        return y.reshape(*x.shape[:-1], self.out_features)  # [..., out]


def candidate_formats(weight: torch.Tensor, max_block_density: float = 0.5) -> dict[str, torch.Tensor]:
    """Sparse layouts worth timing for ``weight``: CSR always, BSR where few enough tiles are non-zero."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse (CSR|BSR) tensor support is in beta")
        formats = {"csr": weight.detach().to_sparse_csr()}
        for block in BSR_BLOCKS:
            density = block_density(weight.detach(), block)
            if density is not None and density <= max_block_density:
                formats[f"bsr{block}"] = weight.detach().to_sparse_bsr((block, block))
    return formats


def choose_formats(linear: nn.Linear, token_counts: Sequence[int], *, threads: int | None, margin: float = 0.02,
                   seed: int = 0, timing: dict[str, Any] | None = None) -> tuple[dict[int, str], dict[str, Any]]:
    """Micro-benchmark the sparse layouts of ``linear`` against its dense kernel at each token count.

    Returns:
        ``(formats, record)``: the chosen format per token count (only those measurably faster, by more than
        ``margin``), and every measured speedup with its CI for the record.
    """
    budget = {"warmup": 2, "min_time": 0.05, "min_pairs": 8, "max_time": 0.6, "target_ci": 0.03}
    budget.update(timing or {})
    candidates = candidate_formats(linear.weight)
    gen = torch.Generator().manual_seed(seed)
    chosen: dict[int, str] = {}
    record: dict[str, Any] = {}
    w, b = linear.weight.detach(), None if linear.bias is None else linear.bias.detach()
    for tokens in token_counts:
        x2 = torch.randn(tokens, linear.in_features, generator=gen).to(w.device)  # [T, in]: cost is data-blind
        best, best_low = None, 1.0 + margin
        measured = {}
        for fmt, w_sp in candidates.items():
            res = time_paired(lambda x2=x2: F.linear(x2, w, b),
                              lambda w_sp=w_sp, x2=x2: _sparse_matmul(w_sp, b, x2),
                              threads=threads, seed=seed, **budget)
            measured[fmt] = {"speedup": round(res.speedup, 4), "ci": [round(res.ci_low, 4), round(res.ci_high, 4)]}
            if res.ci_low > best_low:
                best, best_low = fmt, res.ci_low
        if best is not None:
            chosen[tokens] = best
        record[str(tokens)] = {"chosen": best or "dense", "measured": measured}
    return chosen, record


class SparseBackend:
    """Unstructured Linears as CSR/BSR kernels, chosen per Linear and token count by measurement, then checked
    on the whole model per token count (:mod:`prunebench.backends.sparse_guard`).

    Args:
        min_zero_fraction: a Linear with fewer zeros is left dense without timing (sparse kernels lose there).
        margin: a format must be faster than dense by more than this (CI lower bound) to be chosen.
        timing: overrides of the micro-benchmark budget (``time_paired`` keyword arguments).
        whole_margin: the whole model must be faster than dense on zeros by more than this (CI lower bound)
            for a token count to keep any sparse kernel; None skips the whole-model check (tests only).
        fallback_margin: after a failed whole-model check, only Linears whose own kernel won by more than
            this are tried once more.
        whole_timing: overrides of the whole-model check's budget (``sparse_guard.GUARD_TIMING``).
        timer: the paired timing function of the whole-model check (``time_paired``; tests inject a fake).
    """

    name: ClassVar[str] = "sparse"
    changes_numerics: ClassVar[bool] = False

    def __init__(self, min_zero_fraction: float = 0.5, margin: float = 0.02, timing: dict[str, Any] | None = None,
                 *, whole_margin: float | None = 0.0, fallback_margin: float = 0.25,
                 whole_timing: dict[str, Any] | None = None, timer: Callable[..., PairedResult] = time_paired) -> None:
        self.min_zero_fraction = min_zero_fraction
        self.margin = margin
        self.timing = timing
        self.whole_margin = whole_margin
        self.fallback_margin = fallback_margin
        self.whole_timing = whole_timing
        self.timer = timer

    def availability(self) -> str | None:
        return None

    def _zeros(self, model: nn.Module) -> dict[str, float]:
        return {n: zero_fraction(model.get_submodule(n).weight) for n in _prunable_linears(model)}

    def skip_reason(self, model: nn.Module) -> str | None:
        zeros = self._zeros(model)
        top = max(zeros.values(), default=0.0)
        if top < self.min_zero_fraction:
            return (f"no Linear is at least {self.min_zero_fraction:.0%} zeros (most: {top:.0%}); sparse kernels "
                    "have nothing to skip (a dense or shrunk model runs as eager)")
        return None

    def prepare(self, model: nn.Module, options: PrepareOptions) -> Runnable:
        copied = copy.deepcopy(model).eval()
        token_counts = sorted({b * s for b, s in options.shapes})
        decisions: dict[str, Any] = {}
        replaced: dict[str, tuple[nn.Linear, SparseLinear]] = {}
        micro_low: dict[str, dict[int, float]] = {}
        with pinned_threads(options.threads), torch.no_grad():
            for name, frac in self._zeros(copied).items():
                linear = copied.get_submodule(name)
                if frac < self.min_zero_fraction:
                    decisions[name] = {"zeros": round(frac, 4), "chosen": "dense (too few zeros to time)"}
                    continue
                formats, record = choose_formats(linear, token_counts, threads=options.threads, margin=self.margin,
                                                 seed=options.seed, timing=self.timing)
                decisions[name] = {"zeros": round(frac, 4), "by_tokens": record}
                micro_low[name] = {int(t): r["measured"][r["chosen"]]["ci"][0] for t, r in record.items()
                                   if r["chosen"] != "dense"}
                if formats:
                    sparse = {f: w for f, w in candidate_formats(linear.weight).items() if f in formats.values()}
                    replaced[name] = (linear, SparseLinear(linear, formats, sparse))
                    _swap(copied, name, replaced[name][1])
            copied.eval()  # a new nn.Module starts in training mode (the eval check before timing caught exactly that)
            whole = None
            if self.whole_margin is not None and replaced:
                whole = guard_token_counts(copied, model, {n: sl.formats for n, (_, sl) in replaced.items()},
                                           micro_low, options.shapes, timer=self.timer, threads=options.threads,
                                           seed=options.seed, margin=self.whole_margin,
                                           fallback_margin=self.fallback_margin, timing=self.whole_timing)
        for name, (linear, sl) in replaced.items():
            if not sl.formats:  # dense at every token count after the whole-model check: the plain Linear again
                _swap(copied, name, linear)
        n_sparse = sum(1 for _, sl in replaced.values() if sl.formats)
        logger.info("sparse: %d of %d Linears use a sparse kernel at some shape", n_sparse, len(decisions))
        info = {"token_counts": token_counts, "sparse_linears": n_sparse, "linears": decisions,
                "sparse_by_tokens": {str(t): sum(t in sl.formats for _, sl in replaced.values())
                                     for t in token_counts},
                "whole_model": whole}
        return torch_runnable(self.name, copied, FP32, info=info)


def _swap(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)
