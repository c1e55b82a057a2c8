"""Execution backends: how a (pruned) model is run when it is timed.

``BACKENDS.get(name)`` gives a backend; ``backend.prepare(model, PrepareOptions(...))`` a
:class:`~prunebench.backends.base.Runnable`, which :func:`~prunebench.backends.cells.bench_backends` checks
against the eager model and only then times in a block sweep. Registered, in order:

=====================  =======================================================================================
``eager``              the model as it is (default; the reference)
``int8``               torchao dynamic int8 of the encoder Linears (``pip install -e ".[int8]"``)
``int8-legacy``        ``torch.ao.quantization.quantize_dynamic`` (deprecated, still in torch 2.13)
``sparse``             unstructured Linears as CSR/BSR where micro-benchmarks, then the whole model, are faster
``onnxruntime``        ONNX export + ORT CPU session, fp32 (``pip install -e ".[onnx]"``)
``onnxruntime-int8``   the export with ORT dynamic int8 quantization
``openvino``           OpenVINO CPU runtime, fp32 pinned (``pip install -e ".[openvino]"``)
``openvino-bf16``      OpenVINO with bf16 inference precision (CPUs with native bf16 only)
``openvino-int8``      OpenVINO after NNCF post-training int8 quantization, calibrated on task text
``compile``            ``torch.compile`` (inductor); skipped where no C++ compiler is found
``semi-structured``    2:4 Linears as torch semi-structured sparse tensors (CUDA, compute capability >= 8.0)
=====================  =======================================================================================
"""

from __future__ import annotations

from prunebench.backends.base import (
    FP32,
    INT8,
    Backend,
    BackendUnavailable,
    FidelityError,
    PrepareOptions,
    Runnable,
    Tolerance,
)
from prunebench.backends.fidelity import FidelityResult, assert_eval, check_fidelity, compare, time_runnables
from prunebench.backends.onnx import OnnxRuntimeBackend, OnnxRuntimeInt8Backend
from prunebench.backends.openvino import OpenVinoBackend, OpenVinoBf16Backend, OpenVinoInt8Backend
from prunebench.backends.semistructured import SemiStructuredBackend
from prunebench.backends.sparse import SparseBackend
from prunebench.backends.torch_backends import CompileBackend, EagerBackend, Int8Backend, Int8LegacyBackend
from prunebench.registry import Registry
from prunebench.serde import comma_items, reject_duplicates

#: Backend name -> backend (default settings). ``eager`` is the default and the reference.
BACKENDS: Registry[Backend] = Registry("backend")
for _backend in (EagerBackend(), Int8Backend(), Int8LegacyBackend(), SparseBackend(), OnnxRuntimeBackend(),
                 OnnxRuntimeInt8Backend(), OpenVinoBackend(), OpenVinoBf16Backend(), OpenVinoInt8Backend(),
                 CompileBackend(), SemiStructuredBackend()):
    BACKENDS.add(_backend.name, _backend)

#: The backend used when none is named.
DEFAULT_BACKEND = "eager"


def parse_backends(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"eager,int8"`` (or a list) -> validated names, order kept.

    Raises:
        ValueError: an empty list or item, a name given twice, or an unknown name (the message lists the valid
            ones).
    """
    what = f"backends ({', '.join(BACKENDS.names())})"
    names = comma_items(text, what) if isinstance(text, str) else [str(n).strip() for n in text]
    if not names or not all(names):
        raise ValueError(f"no backend or an empty one given; choose from: {', '.join(BACKENDS.names())}")
    reject_duplicates(names, text if isinstance(text, str) else ",".join(names))
    for name in names:
        BACKENDS.get(name)
    return tuple(names)


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "FP32",
    "INT8",
    "Backend",
    "BackendUnavailable",
    "FidelityError",
    "FidelityResult",
    "PrepareOptions",
    "Runnable",
    "Tolerance",
    "assert_eval",
    "check_fidelity",
    "compare",
    "parse_backends",
    "time_runnables",
]
