"""Numeric precision of training steps: fp32, or bf16 mixed precision where the hardware has it.

Weights, optimizer state and evaluation always stay fp32; ``bf16`` only runs the forward matmuls under
``torch.autocast`` (the usual mixed-precision recipe). On a CPU with native bf16 (AMX or AVX512-BF16) that
roughly halves a training step of ``medium`` (measured 0.38-0.45 s against 0.77-0.83 s on a 2-core AMX
Xeon), which buys about twice the steps in the same time budget. A CPU without native bf16 would emulate
it and get slower, so ``auto`` picks bf16 only where it is native.

Attention in a training step runs on SDPA's math backend on CPU: at the short rows of the built-in task the
fused CPU flash-attention backward is slower than plain GEMMs, and in bf16 it was a quarter of the step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

#: Accepted precision names; ``auto`` resolves to one of the other two.
PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` computes bf16 matmuls natively (CPU: AMX or AVX512-BF16; CUDA: bf16 support)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    # Private torch helpers; where a torch version lacks them, stay on the safe side (fp32).
    return any(check is not None and bool(check()) for check in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"`` for the requested ``precision`` on ``device``.

    Raises:
        ValueError: an unknown name, or ``bf16`` asked for on a device without native bf16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        raise ValueError(f"precision bf16 needs native bf16 on {device.type} (AMX, AVX512-BF16 or a bf16 GPU); "
                         "use fp32 or auto")
    return precision


@contextlib.contextmanager
def step_context(precision: str, device: torch.device) -> Iterator[None]:
    """Wrap the forward of one training step: autocast for ``bf16``, the math attention backend on CPU.

    Args:
        precision: a resolved precision (``"fp32"`` or ``"bf16"``).
        device: where the model lives.
    """
    with contextlib.ExitStack() as stack:
        if precision == "bf16":
            stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
        if device.type == "cpu":
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield
