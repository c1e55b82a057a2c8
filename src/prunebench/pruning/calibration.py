"""Calibration batches: validation, and activation statistics gathered with forward hooks.

Hooks are always removed (``finally``), so a model never leaves calibration with hooks attached, even
when a batch is malformed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from prunebench.models.adapters import as_adapter
from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch

log = logging.getLogger(__name__)


def check_calib(calib: Sequence[Batch] | None, *, purpose: str, labelled: bool = False) -> list[Batch]:
    """Return ``calib`` as a list, or raise a one-line ValueError saying what is missing.

    Args:
        calib: batches in the shared format (``prunebench.models.batch``).
        purpose: what needs them, for the message (``"the wanda criterion"``).
        labelled: every batch must carry ``labels`` (gradient-based criteria).
    """
    if calib is None or len(calib) == 0:
        raise ValueError(f"{purpose} needs calibration data: pass calib=[batch, ...] (a list of batches)")
    batches = list(calib)
    for i, batch in enumerate(batches):
        if not isinstance(batch, dict) or "input_ids" not in batch:
            raise ValueError(f"calibration batch {i} is not a batch dict with 'input_ids'")
        if labelled and "labels" not in batch:
            raise ValueError(f"{purpose} needs labelled calibration batches; batch {i} has no 'labels'")
    return batches


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch with every tensor on ``device``."""
    return {k: v.to(device) for k, v in batch.items()}


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter."""
    return next(model.parameters()).device


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Run calibration without dropout, then restore the model's train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class _Tapped(Exception):
    """Raised by a stopping tap once its Linear has run: the rest of the forward cannot change what it saw."""


@torch.no_grad()
def tap_linears(
    model: ArchAdapter | nn.Module, linears: Mapping[Hashable, nn.Linear], batches: Sequence[Batch],
    on_rows: Callable[[Hashable, torch.Tensor], None], *, what: str = "in", stop: bool = False,
) -> None:
    """Run ``batches`` through ``model`` (eval mode, no gradients) and hand every Linear's inputs
    (``what="in"``) or outputs (``"out"``) at real tokens to ``on_rows(key, rows)``, rows [n, width].

    Padding positions are dropped (by the attention mask), so statistics are over real text. The caller
    decides what to keep of each batch's rows (all of them, or a running sum such as ``X^T X``), so a whole
    calibration set of activations is held only where the caller needs it.

    Args:
        model: a model or its adapter; batches run through the adapter's ``hidden_states``.
        stop: end each forward right after the Linear (one Linear only): later layers cannot change what it
            saw, and on average half the layers are not run.
    """
    if what not in ("in", "out"):
        raise ValueError(f"what must be 'in' or 'out', got {what!r}")
    if stop and len(linears) != 1:
        raise ValueError(f"stop needs exactly one Linear, got {len(linears)}")
    adapter = as_adapter(model)
    mask: dict[str, torch.Tensor | None] = {"now": None}  # the running batch's mask, read by the hooks

    def make_hook(key: Hashable):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            t = (args[0] if what == "in" else out).detach()  # [B, S, width]
            m = mask["now"]
            on_rows(key, t[m] if m is not None else t.reshape(-1, t.shape[-1]))  # [n, width]
            if stop:
                raise _Tapped
        return hook

    handles = [lin.register_forward_hook(make_hook(key)) for key, lin in linears.items()]
    device = model_device(adapter.model)
    try:
        with evaluation_mode(adapter.model):
            for batch in batches:
                b = to_device(batch, device)
                m = b.get("attention_mask")
                mask["now"] = None if m is None else m.to(torch.bool)
                try:
                    adapter.hidden_states(b)
                except _Tapped:
                    pass
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def input_sq_norms(
    model: ArchAdapter | nn.Module, linears: dict[str, nn.Linear], calib: Sequence[Batch]
) -> dict[str, torch.Tensor]:
    """Sum over calibration tokens of each input feature's square, per Linear: name -> [in_features].

    ``model`` is a model or its adapter; the batches run through the adapter's ``hidden_states``.

    Padding positions are excluded (weighted by the attention mask): they are not real text, and a
    padded batch would otherwise bias the statistics toward the pad embedding.
    """
    batches = check_calib(calib, purpose="activation statistics")
    adapter = as_adapter(model)
    model = adapter.model
    device = model_device(model)
    sums = {name: torch.zeros(lin.in_features, device=device, dtype=torch.float64) for name, lin in linears.items()}
    current: dict[str, torch.Tensor | None] = {"mask": None}  # the running batch's mask, read by the hooks

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach()  # [B, S, in]
            sq = x * x  # [B, S, in]
            mask = current["mask"]
            if mask is not None:
                sq = sq * mask[..., None].to(sq.dtype)  # [B, S, in], padding rows zeroed
            # Per-batch sums in the activation dtype (fast); the running total in float64 (many batches).
            sums[name] += sq.sum(dim=(0, 1)).to(torch.float64)  # [in]

        return hook

    handles = []
    try:
        for name, lin in linears.items():
            handles.append(lin.register_forward_pre_hook(make_hook(name)))
        with evaluation_mode(model):
            for batch in batches:
                b = to_device(batch, device)
                current["mask"] = b.get("attention_mask")
                adapter.hidden_states(b)
    finally:
        for h in handles:
            h.remove()
    log.debug("collected input statistics of %d modules over %d batches", len(linears), len(batches))
    return {name: s.to(linears[name].weight.dtype) for name, s in sums.items()}
