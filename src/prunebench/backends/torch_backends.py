"""Backends that stay inside PyTorch: ``eager``, ``compile``, ``int8`` (torchao) and ``int8-legacy`` (torch.ao).

Each prepares a *copy* of the model (quantization replaces Linears in place, compilation wraps the module),
so the shared model the run times as dense eager is never touched.
"""

from __future__ import annotations

import copy
import importlib
import logging
import shutil
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from prunebench.backends.base import (
    FP32,
    INT8,
    BackendUnavailable,
    PrepareOptions,
    Runnable,
    Tolerance,
    ensure_available,
    missing,
    require,
)
from prunebench.models.adapters import find_adapter
from prunebench.models.batch import Batch

logger = logging.getLogger(__name__)


def hidden_fn(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """``(input_ids, attention_mask) -> [B, S, D]`` hidden states of ``model``, through its adapter.

    A prunebench encoder (or anything with an ``encode``) is called directly, which is what its adapter does.
    """
    encode = getattr(model, "encode", None)
    if callable(encode):
        return encode
    adapter = find_adapter(model)
    if adapter is None:
        return lambda ids, mask: model(ids, mask)

    def via_adapter(ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch = {"input_ids": ids} if mask is None else {"input_ids": ids, "attention_mask": mask}
        return adapter.hidden_states(batch)

    return via_adapter


def effective_mask(batch: Batch) -> torch.Tensor | None:
    """The batch's attention mask, or None when nothing is padded (same outputs; the timed call skips it)."""
    mask = batch.get("attention_mask")
    if mask is not None and bool(mask.all()):
        return None
    return mask


def torch_runnable(name: str, model: nn.Module, tolerance: Tolerance, *, call_module: nn.Module | None = None,
                   env: dict[str, Any] | None = None, info: dict[str, Any] | None = None,
                   memory_method: str = "tensors") -> Runnable:
    """A runnable over a torch module: ``bind`` closes over the batch's tensors, outputs are the hidden states.

    Args:
        name: backend name.
        model: the module whose eval mode is checked before timing.
        tolerance: the fidelity tolerance.
        call_module: what is called instead of ``model`` (e.g. its compiled wrapper); default ``model``.
        env, info: recorded with the runnable.
        memory_method: see :class:`~prunebench.backends.base.Runnable`.
    """
    fn = hidden_fn(call_module if call_module is not None else model)

    def bind(batch: Batch) -> Callable[[], Any]:
        ids, mask = batch["input_ids"], effective_mask(batch)
        return lambda: fn(ids, mask)

    def outputs(batch: Batch) -> torch.Tensor:
        with torch.inference_mode():
            return bind(batch)().detach().float().cpu()

    return Runnable(backend=name, bind=bind, outputs=outputs, modules=[model], tolerance=tolerance,
                    memory_method=memory_method, env=dict(env or {}), info=dict(info or {}))


def _memory_method(options: PrepareOptions) -> str:
    return "cuda" if torch.device(options.device).type == "cuda" else "tensors"


class EagerBackend:
    """Today's path: the model itself, called as it is (the reference every other backend is checked against)."""

    name: ClassVar[str] = "eager"
    changes_numerics: ClassVar[bool] = False

    def availability(self) -> str | None:
        return None

    def skip_reason(self, model: nn.Module) -> str | None:
        return None

    def prepare(self, model: nn.Module, options: PrepareOptions) -> Runnable:
        # No copy: eager *is* the model, and it only reads it.
        return torch_runnable(self.name, model, FP32, memory_method=_memory_method(options))


#: Compilers inductor's CPU backend can build its C++ kernels with.
CXX_COMPILERS = ("g++", "c++", "clang++")


class CompileBackend:
    """``torch.compile`` (inductor) of a copy of the model, one graph per timed shape.

    Args:
        which: finds an executable on PATH (``shutil.which``); injected so the no-compiler skip is testable.
        mode: ``torch.compile`` mode (None: its default).
        compiler_backend: ``torch.compile`` backend (``inductor``; tests use ``eager``, which only traces).
    """

    name: ClassVar[str] = "compile"
    changes_numerics: ClassVar[bool] = False

    def __init__(self, which: Callable[[str], str | None] = shutil.which, mode: str | None = None,
                 compiler_backend: str = "inductor") -> None:
        self.which = which
        self.mode = mode
        self.compiler_backend = compiler_backend

    def _compiler(self) -> str | None:
        return next((path for cxx in CXX_COMPILERS if (path := self.which(cxx))), None)

    def availability(self) -> str | None:
        if self._compiler() is None:
            return f"torch.compile needs a C++ compiler on CPU and none was found ({', '.join(CXX_COMPILERS)})"
        return None

    def skip_reason(self, model: nn.Module) -> str | None:
        return None

    def prepare(self, model: nn.Module, options: PrepareOptions) -> Runnable:
        ensure_available(self, options)
        copied = copy.deepcopy(model).eval()
        fn = hidden_fn(copied)
        # dynamic=False: one specialized graph per (batch, seq) shape, as a deployment with fixed shapes gets;
        # the first call at each shape compiles (warm-up absorbs it and the cell records its first call apart).
        compiled = torch.compile(fn, mode=self.mode, dynamic=False, backend=self.compiler_backend)

        class _Compiled(nn.Module):
            def encode(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
                return compiled(ids, mask)

        env = {"compiler": self._compiler(), "compile_mode": self.mode or "default",
               "compile_backend": self.compiler_backend}
        return torch_runnable(self.name, copied, FP32, call_module=_Compiled(), env=env,
                              memory_method=_memory_method(options))


def _prunable_linears(model: nn.Module) -> list[str]:
    """Qualified names of the non-empty prunable Linears by the model's adapter (embeddings and heads excluded)."""
    adapter = find_adapter(model)
    if adapter is not None:
        return [n for n, m in adapter.prunable_linears().items() if m.weight.numel() > 0]
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.weight.numel() > 0]


class Int8Backend:
    """Dynamic int8 quantization of the encoder Linears through torchao, the path PyTorch maintains now.

    ``torchao.quantization.quantize_(model, Int8DynamicActivationInt8WeightConfig())``: int8 weights per
    output channel, activations quantized per token at run time. ``torch.ao.quantization.quantize_dynamic``
    is deprecated in favour of it (torch 2.13 still ships it: see :class:`Int8LegacyBackend`).
    """

    name: ClassVar[str] = "int8"
    changes_numerics: ClassVar[bool] = True

    def availability(self) -> str | None:
        return missing("torchao", "int8")

    def skip_reason(self, model: nn.Module) -> str | None:
        return None if _prunable_linears(model) else "no non-empty Linear to quantize"

    def prepare(self, model: nn.Module, options: PrepareOptions) -> Runnable:
        torchao = require("torchao", "int8")
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        copied = copy.deepcopy(model).eval()
        names = set(_prunable_linears(copied))
        quantize_(copied, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda m, fqn: fqn in names)
        env = {"int8_path": "torchao.quantization.quantize_(Int8DynamicActivationInt8WeightConfig)",
               "torchao": torchao.__version__}
        return torch_runnable(self.name, copied, INT8, env=env, info={"quantized_linears": len(names)},
                              memory_method=_memory_method(options))


def legacy_quantize_dynamic() -> Callable[..., nn.Module] | None:
    """``torch.ao.quantization.quantize_dynamic``, or None where this torch no longer has it.

    Deprecated in favour of torchao: a torch without the module, or with a module that no longer imports or no
    longer has the function, makes ``int8-legacy`` a skip with its reason, never a crash.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # importing the deprecated module may warn
        try:
            module = importlib.import_module("torch.ao.quantization")
        except Exception:  # gone, or broken on import: either way this torch has no legacy path
            logger.debug("torch.ao.quantization does not import", exc_info=True)
            return None
    fn = getattr(module, "quantize_dynamic", None)
    return fn if callable(fn) else None


class Int8LegacyBackend:
    """``torch.ao.quantization.quantize_dynamic`` (qint8, FBGEMM/oneDNN kernels): deprecated, still in torch 2.13.

    Kept beside ``int8`` because on this project's CPU it is the faster of the two in eager mode (see
    ``benchmarks/backends.py``); its deprecation warnings are silenced and the path is recorded. Once torch drops
    it, the backend is unavailable (:func:`legacy_quantize_dynamic`), so every cell of it is a recorded skip.
    """

    name: ClassVar[str] = "int8-legacy"
    changes_numerics: ClassVar[bool] = True

    def availability(self) -> str | None:
        if legacy_quantize_dynamic() is None:
            return f"torch {torch.__version__} no longer has torch.ao.quantization.quantize_dynamic; use int8"
        if torch.backends.quantized.engine == "none":
            return "no quantized engine (fbgemm/onednn/qnnpack) in this torch build"
        return None

    def skip_reason(self, model: nn.Module) -> str | None:
        return None if _prunable_linears(model) else "no non-empty Linear to quantize"

    def prepare(self, model: nn.Module, options: PrepareOptions) -> Runnable:
        ensure_available(self, options, "cpu", "int8-legacy runs on the CPU only")
        quantize_dynamic = legacy_quantize_dynamic()
        if quantize_dynamic is None:  # ensure_available has refused already; this keeps the type checker sure
            raise BackendUnavailable(str(self.availability()))
        copied = copy.deepcopy(model).eval()
        names = set(_prunable_linears(copied))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            # quantize_dynamic's new quantized modules start in training mode (caught by the eval check).
            quantized = quantize_dynamic(copied, names, dtype=torch.qint8).eval()
        env = {"int8_path": "torch.ao.quantization.quantize_dynamic(qint8) [deprecated]",
               "quantized_engine": torch.backends.quantized.engine}
        return torch_runnable(self.name, quantized, INT8, env=env, info={"quantized_linears": len(names)})
