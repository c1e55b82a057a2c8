"""The ``sparse`` backend: unstructured-pruned Linears run as CSR/BSR kernels where, and only where, that is faster.

Sparse kernels beat a dense GEMM only at high sparsity and few tokens (measured on ``medium``, 90% zeros, 2
threads: CSR 2.4x faster than dense for the 1536x512 qkv projection at 128 tokens, 0.9-1.1x at 2048 tokens,
and BSR slower everywhere for unstructured zeros). So the format of each Linear is chosen by a paired
micro-benchmark at the token counts the run will time (``batch_size * seq_len`` of every shape), and a Linear
switches to a sparse format at a token count only where the whole confidence interval of its speedup over
the dense kernel lies above ``1 + margin``; everywhere else (and at token counts that were not measured) it
runs the dense kernel on the same zeros. That is what makes ``sparse`` never slower than ``zeros``, up to the
per-call overhead of the format lookup.

The replaced Linears keep their dense weight too (for the token counts that stay dense), so the prepared copy
holds more parameter memory than the model; the peak-memory figure counts activations only, as for eager.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.backends.base import FP32, PrepareOptions, Runnable
from prunebench.backends.torch_backends import _prunable_linears, torch_runnable
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
    """Unstructured Linears as CSR/BSR kernels, chosen per Linear and token count by measurement.

    Args:
        min_zero_fraction: a Linear with fewer zeros is left dense without timing (sparse kernels lose there).
        margin: a format must be faster than dense by more than this (CI lower bound) to be chosen.
        timing: overrides of the micro-benchmark budget (``time_paired`` keyword arguments).
    """

    name: ClassVar[str] = "sparse"
    changes_numerics: ClassVar[bool] = False

    def __init__(self, min_zero_fraction: float = 0.5, margin: float = 0.02,
                 timing: dict[str, Any] | None = None) -> None:
        self.min_zero_fraction = min_zero_fraction
        self.margin = margin
        self.timing = timing

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
        n_sparse = 0
        with pinned_threads(options.threads), torch.no_grad():
            for name, frac in self._zeros(copied).items():
                linear = copied.get_submodule(name)
                if frac < self.min_zero_fraction:
                    decisions[name] = {"zeros": round(frac, 4), "chosen": "dense (too few zeros to time)"}
                    continue
                formats, record = choose_formats(linear, token_counts, threads=options.threads, margin=self.margin,
                                                 seed=options.seed, timing=self.timing)
                decisions[name] = {"zeros": round(frac, 4), "by_tokens": record}
                if formats:
                    n_sparse += 1
                    sparse = {f: w for f, w in candidate_formats(linear.weight).items() if f in formats.values()}
                    parent, _, child = name.rpartition(".")
                    setattr(copied.get_submodule(parent), child, SparseLinear(linear, formats, sparse))
        copied.eval()  # a new nn.Module starts in training mode (the eval check before timing caught exactly that)
        logger.info("sparse: %d of %d Linears use a sparse kernel at some shape", n_sparse, len(decisions))
        info = {"token_counts": token_counts, "sparse_linears": n_sparse, "linears": decisions}
        return torch_runnable(self.name, copied, FP32, info=info)
