"""Accuracy on a backend: the task's evaluation with the encoder's hidden states computed by the runnable.

Where a backend changes the numerics (int8, ONNX Runtime int8, fp16), accuracy must be measured on it rather
than copied from eager. :func:`backend_encoder` gives an object that evaluates like the source encoder (same
task head, pooling and config) but whose ``encode`` runs the runnable, so ``tasks.evaluate`` scores exactly
the hidden states that were timed; the task head itself stays eager (it is not what the backend runs).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from prunebench.backends.base import Runnable


def backend_encoder(source: nn.Module, runnable: Runnable) -> Any:
    """A shallow copy of ``source`` whose ``encode(ids, mask)`` returns ``runnable``'s hidden states.

    The copy shares ``source``'s parameters and submodules (nothing is duplicated or changed); only the
    ``encode`` attribute of the copy is replaced.
    """
    proxy = copy.copy(source)
    param = next(iter(source.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")

    def encode(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch = {"input_ids": input_ids}
        if attention_mask is not None:
            batch["attention_mask"] = attention_mask
        return runnable.outputs(batch).to(device)  # [B, S, D]

    object.__setattr__(proxy, "encode", encode)
    return proxy


def evaluate_on_backend(source: nn.Module, runnable: Runnable, task: Any, **kwargs: Any) -> Any:
    """``tasks.evaluate`` of ``source`` with its encoder run by ``runnable`` (keyword arguments passed on)."""
    from prunebench.tasks import evaluate

    return evaluate(backend_encoder(source, runnable), task, **kwargs)
