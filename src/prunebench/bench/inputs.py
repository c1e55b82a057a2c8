"""Benchmark inputs in the shared batch format, and the call that is timed for a model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunebench.models.adapters import find_adapter
from prunebench.models.batch import Batch


def make_inputs(
    vocab_size: int,
    batch_size: int,
    seq_len: int,
    *,
    seed: int = 0,
    pad_fraction: float = 0.0,
    device: str | torch.device = "cpu",
    pad_token_id: int = 0,
) -> Batch:
    """A seeded batch ``{"input_ids", "attention_mask"}``; the same arguments always give the same batch.

    Args:
        vocab_size: ids are drawn from ``[1, vocab_size)`` (0 is reserved for padding).
        batch_size, seq_len: shape ``[B, S]``.
        seed: seed of the generator (the global RNG is not touched).
        pad_fraction: expected fraction of padding positions, in [0, 1). Real lengths vary per row as in
            real data: each row keeps a uniform random fraction of real tokens whose mean is
            ``1 - pad_fraction`` (at least one real token per row); padding sits at the end of the row.
        device: where the tensors are created.
        pad_token_id: id written at padding positions.

    Raises:
        ValueError: a non-positive size or a pad fraction outside [0, 1).
    """
    for name, value in (("vocab_size", vocab_size), ("batch_size", batch_size), ("seq_len", seq_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2 (one id is padding), got {vocab_size}")
    if not 0.0 <= pad_fraction < 1.0:
        raise ValueError(f"pad_fraction must lie in [0, 1), got {pad_fraction}")
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch_size, seq_len), generator=gen)  # [B, S]
    u = torch.rand(batch_size, generator=gen)  # [B]
    # Real fraction per row ~ U(lo, hi) with mean 1 - pad_fraction.
    if pad_fraction <= 0.5:
        real = 1.0 - 2.0 * pad_fraction * u
    else:
        real = 2.0 * (1.0 - pad_fraction) * u
    lengths = (real * seq_len).round().long().clamp(1, seq_len)  # [B]
    mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()  # [B, S]
    ids = ids.masked_fill(mask == 0, pad_token_id)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def forward_call(model: nn.Module, batch: Batch, *, include_head: bool = False) -> Callable[[], Any]:
    """The zero-argument call that is timed.

    A model with an architecture adapter gets the adapter's ``forward_call``: for a prunebench
    :class:`~prunebench.models.encoder.TransformerEncoder` that runs ``encode`` only unless ``include_head``
    (the task head, an MLM projection onto the whole vocabulary, is not pruned and would dilute every
    speedup), with its attention mask dropped when nothing is padded (same outputs, less work per forward).
    Any other module is called as ``module(input_ids, attention_mask)``.
    """
    adapter = find_adapter(model)
    if adapter is not None:
        return adapter.forward_call(batch, include_head=include_head)
    ids, mask = batch["input_ids"], batch.get("attention_mask")
    return lambda: model(ids, mask)


#: Device types the harness measures on.
DEVICES = ("cpu", "cuda")


def parse_device(device: str | torch.device, *, require_available: bool = True) -> torch.device:
    """``device`` as a torch.device of a supported type (and, by default, present on this machine).

    Raises:
        ValueError: an unknown device string, an unsupported type, or CUDA without CUDA.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}; choose from: {', '.join(DEVICES)}") from None
    if dev.type not in DEVICES:
        raise ValueError(f"unknown device {str(device)!r}; choose from: {', '.join(DEVICES)}")
    if require_available and dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available on this machine; use cpu")
    return dev


def check_device(model: nn.Module, device: str | torch.device) -> None:
    """Raise a one-line ValueError unless ``model``'s parameters live on ``device`` (which must exist)."""
    dev = parse_device(device)
    param = next(iter(model.parameters()), None)
    if param is not None and param.device.type != dev.type:
        raise ValueError(f"model is on {param.device} but the benchmark device is {dev}; move it first")
