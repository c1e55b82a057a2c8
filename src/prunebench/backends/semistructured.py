"""``semi-structured``: 2:4-sparse Linears through torch's semi-structured sparse tensors (CUDA, fp16).

``torch.sparse.to_sparse_semi_structured`` stores a weight with at most 2 non-zeros in every 4 consecutive
input columns in the compressed form the sparse tensor cores of Ampere and newer GPUs (compute capability
>= 8.0) run. It needs a CUDA device, half precision and shapes that tile (multiples of 64).

The whole model runs in fp16 and only the Linears that hold a 2:4 pattern in tiling shapes are swapped, so
every variant runs here: dense on this backend is dense fp16 on the same GPU. That is the baseline a 2:4 gain
must be read against (the deploy view's "against dense on the same backend"); against fp32 eager most of the
speedup is fp16's, not the pruning's. Without a capable GPU the backend is unavailable (a clean skip). Half
precision changes the numerics, so the fidelity check is by cosine.
"""

from __future__ import annotations

import copy
import warnings
from typing import ClassVar

import torch
from torch import nn

from prunebench.backends.base import PrepareOptions, Runnable, Tolerance, ensure_available
from prunebench.backends.torch_backends import _prunable_linears, torch_runnable

#: fp16 against the fp32 eager model: rounding only.
FP16 = Tolerance(max_abs=None, min_cosine=0.999, note="fp16 with 2:4 kernels: rounding error, cosine >= 0.999")

#: Both weight dimensions must be multiples of this for the semi-structured layout.
TILE = 64


def is_two_four(weight: torch.Tensor) -> bool:
    """True when every group of 4 consecutive input columns of ``weight`` [out, in] has at most 2 non-zeros."""
    rows, cols = weight.shape
    if cols % 4:
        return False
    groups = weight.reshape(rows, cols // 4, 4).ne(0).sum(dim=-1)  # [out, in/4]
    return bool((groups <= 2).all())


def _kernel_library() -> str:
    """Which library torch's semi-structured tensors call here: cuSPARSELt where torch has it (its default),
    else CUTLASS (whose 2:4 kernels torch builds for compute capability 8.x only)."""
    from torch.sparse import SparseSemiStructuredTensor

    cusparselt = torch.backends.cusparselt
    if cusparselt.is_available() and not SparseSemiStructuredTensor._FORCE_CUTLASS:
        return f"cuSPARSELt {cusparselt.version()}"
    return "CUTLASS"


class SemiStructuredBackend:
    """The model in fp16 on a capable CUDA GPU, its 2:4 Linears as semi-structured sparse tensors (dense: fp16)."""

    name: ClassVar[str] = "semi-structured"
    changes_numerics: ClassVar[bool] = True

    def availability(self) -> str | None:
        if not torch.cuda.is_available():
            return "semi-structured (2:4) sparse kernels need a CUDA GPU; none is available"
        major, minor = torch.cuda.get_device_capability()
        if (major, minor) < (8, 0):
            return f"semi-structured (2:4) sparse kernels need compute capability >= 8.0, this GPU has {major}.{minor}"
        return None

    def eligible(self, model: nn.Module) -> list[str]:
        """Names of the prunable Linears this backend swaps: a 2:4 pattern, both dimensions multiples of TILE."""
        out = []
        for name in _prunable_linears(model):
            w = model.get_submodule(name).weight
            if w.shape[0] % TILE == 0 and w.shape[1] % TILE == 0 and is_two_four(w):
                out.append(name)
        return out

    def skip_reason(self, model: nn.Module) -> str | None:
        # Every model runs: one without 2:4 Linears is the fp16 baseline its 2:4 twin is compared with.
        return None

    def prepare(self, model: nn.Module, options: PrepareOptions) -> Runnable:
        ensure_available(self, options, "cuda", "semi-structured needs --device cuda")
        from torch.sparse import to_sparse_semi_structured

        copied = copy.deepcopy(model).eval().half()
        names = self.eligible(copied)
        # torch warns on every construction that this API is a prototype: the user chose this backend, and the
        # warning would land in the middle of a run's progress display, once per variant.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*SparseSemiStructuredTensor is in prototype", UserWarning)
            for name in names:
                linear = copied.get_submodule(name)
                linear.weight = nn.Parameter(to_sparse_semi_structured(linear.weight), requires_grad=False)
        return torch_runnable(self.name, copied, FP16, memory_method="cuda",
                              env={"gpu": torch.cuda.get_device_name(), "dtype": "float16",
                                   "kernels": _kernel_library()},
                              info={"semi_structured_linears": names})
