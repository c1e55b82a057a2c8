"""``semi-structured``: 2:4-sparse Linears through torch's semi-structured sparse tensors (CUDA, fp16).

``torch.sparse.to_sparse_semi_structured`` stores a weight with at most 2 non-zeros in every 4 consecutive
input columns in the compressed form the sparse tensor cores of Ampere and newer GPUs (compute capability
>= 8.0) run. It needs a CUDA device, half precision and shapes that tile (multiples of 64); without them the
backend reports a clean skip. Half precision changes the numerics, so the fidelity check is by cosine.
"""

from __future__ import annotations

import copy
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


class SemiStructuredBackend:
    """2:4 Linears as semi-structured sparse tensors on a capable CUDA GPU (the rest of the model in fp16)."""

    name: ClassVar[str] = "semi-structured"
    changes_numerics: ClassVar[bool] = True

    def availability(self) -> str | None:
        if not torch.cuda.is_available():
            return "semi-structured (2:4) sparse kernels need a CUDA GPU; none is available"
        major, minor = torch.cuda.get_device_capability()
        if (major, minor) < (8, 0):
            return f"semi-structured (2:4) sparse kernels need compute capability >= 8.0, this GPU has {major}.{minor}"
        return None

    def _eligible(self, model: nn.Module) -> list[str]:
        out = []
        for name in _prunable_linears(model):
            w = model.get_submodule(name).weight
            if w.shape[0] % TILE == 0 and w.shape[1] % TILE == 0 and is_two_four(w):
                out.append(name)
        return out

    def skip_reason(self, model: nn.Module) -> str | None:
        if not self._eligible(model):
            return f"no Linear holds a 2:4 pattern with both dimensions multiples of {TILE}"
        return None

    def prepare(self, model: nn.Module, options: PrepareOptions) -> Runnable:
        ensure_available(self, options, "cuda", "semi-structured needs --device cuda")
        from torch.sparse import to_sparse_semi_structured

        copied = copy.deepcopy(model).eval().half()
        names = self._eligible(copied)
        with torch.no_grad():
            for name in names:
                linear = copied.get_submodule(name)
                linear.weight = nn.Parameter(to_sparse_semi_structured(linear.weight), requires_grad=False)
        return torch_runnable(self.name, copied, FP16, memory_method="cuda",
                              env={"gpu": torch.cuda.get_device_name(), "dtype": "float16"},
                              info={"semi_structured_linears": names})
