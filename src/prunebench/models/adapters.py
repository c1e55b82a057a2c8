"""The adapter registry: which :class:`~prunebench.models.arch.ArchAdapter` understands a given model.

``ADAPTERS`` maps a name to an adapter *class*; :func:`adapter_for` wraps a model in the first registered
class whose ``matches(model)`` is true. Hugging Face adapters live in ``prunebench.models.hf`` (the ``hf``
extra) and register themselves when that module is imported, which :func:`find_adapter` does lazily the
first time it sees a model from the ``transformers`` package.

Rebuild seam: every adapter class has a classmethod ``from_manifest(config, manifest)`` that builds an
empty model with the saved widths; :func:`prunebench.models.io.load_model` looks the class up by the
``adapter`` name stored in ``config.json`` (:func:`adapter_class`) and loads the tensors into its result,
so io needs no concrete class.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import torch
from torch import nn

from prunebench.errors import install_hint
from prunebench.models.adapter import EncoderAdapter
from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch, LossFn
from prunebench.registry import Registry

#: name -> adapter class, in lookup order (the first whose ``matches`` accepts a model wins).
ADAPTERS: Registry[type[Any]] = Registry("model architecture")
ADAPTERS.add(EncoderAdapter.name, EncoderAdapter)

#: Module whose import registers the Hugging Face adapters, and the extra that provides its dependencies.
HF_MODULE = "prunebench.models.hf"
HF_HINT = install_hint("hf")


def _load_hf_adapters() -> None:
    """Import the Hugging Face adapters (they register on import); a one-line error if they cannot load."""
    try:
        importlib.import_module(HF_MODULE)
    except ImportError as exc:
        raise ValueError(f"Hugging Face models need the hf extra ({exc}); install it: {HF_HINT}") from None


def find_adapter(model: nn.Module) -> ArchAdapter | None:
    """The adapter of ``model`` from the first registered class that matches it, or None."""
    for _, cls in ADAPTERS:
        if cls.matches(model):
            return cls(model)
    if type(model).__module__.startswith("transformers.") and HF_MODULE not in sys.modules:
        _load_hf_adapters()
        return find_adapter(model)
    return None


def adapter_for(model: nn.Module) -> ArchAdapter:
    """The adapter of ``model``.

    Raises:
        ValueError: no registered adapter understands ``model``; the message lists the supported ones.
    """
    adapter = find_adapter(model)
    if adapter is None:
        raise ValueError(
            f"unsupported model {type(model).__name__}: no architecture adapter matches it; "
            f"supported: {', '.join(ADAPTERS.names())}"
        )
    return adapter


def as_adapter(model_or_adapter: Any) -> ArchAdapter:
    """``model_or_adapter`` if it already is an adapter, else :func:`adapter_for` of the module."""
    if isinstance(model_or_adapter, nn.Module):
        return adapter_for(model_or_adapter)
    if isinstance(model_or_adapter, ArchAdapter):
        return model_or_adapter
    raise ValueError(f"expected a model or an architecture adapter, got {type(model_or_adapter).__name__}")


class _WithLoss:
    """An adapter whose :meth:`loss` is ``loss_fn(model, batch)``; everything else is the wrapped adapter's."""

    def __init__(self, adapter: ArchAdapter, loss_fn: LossFn) -> None:
        self._adapter, self._loss_fn = adapter, loss_fn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    def loss(self, batch: Batch) -> torch.Tensor:
        """The given task loss of ``batch`` (e.g. an HF base encoder's frozen-probe cross-entropy)."""
        return self._loss_fn(self._adapter.model, batch)


def with_loss(model_or_adapter: Any, loss_fn: LossFn | None) -> ArchAdapter:
    """The adapter of ``model_or_adapter`` with ``loss_fn`` as its task loss (None: its own), so gradient
    criteria score a model that has no loss of its own (or should be scored by another one) unchanged."""
    adapter = as_adapter(model_or_adapter)
    return adapter if loss_fn is None else _WithLoss(adapter, loss_fn)  # type: ignore[return-value]


def adapter_class(name: str) -> type[Any]:
    """The adapter class registered as ``name`` (a saved model's ``adapter``); HF names load the extra.

    Raises:
        ValueError: unknown name, listing the registered ones.
    """
    if name not in ADAPTERS and HF_MODULE not in sys.modules:
        try:
            importlib.import_module(HF_MODULE)
        except ImportError:
            raise ValueError(
                f"unknown model architecture {name!r}; choose from: {', '.join(ADAPTERS.names())} "
                f"(Hugging Face architectures need the hf extra: {HF_HINT})"
            ) from None
    return ADAPTERS.get(name)
