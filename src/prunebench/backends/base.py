"""What an execution backend is: it turns a (pruned) model into a :class:`Runnable` that is checked, then timed.

A backend never edits the model it is given (it works on a copy or an export), says whether it can express
a model at all (:meth:`Backend.skip_reason`; a skip is recorded with its reason, never an error), how its
threads are controlled, how its memory is measured, what environment it adds to a record and which
:class:`Tolerance` its outputs must meet against the eager model before anything is timed.

The comparison is always on the encoder's last hidden states ``[B, S, D]`` (what pruning changes and what
``prunebench.bench`` times by default), as float32 on the CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from prunebench.errors import PrunebenchError, install_hint
from prunebench.logs import quiet_loggers
from prunebench.models.batch import Batch


class BackendUnavailable(PrunebenchError):
    """A backend's package (or hardware) is missing; the message is one line with what to install."""


def ensure_available(backend: Any, options: Any, device: str | None = None, needs: str = "") -> None:
    """Raise :class:`BackendUnavailable` unless ``backend`` is installed and ``options.device`` is ``device``.

    Args:
        backend: has ``availability() -> str | None`` (None: installed).
        options: the :class:`PrepareOptions` of the call (its ``device``).
        device: the device type the backend runs on (None: any).
        needs: the one-line message for another device.
    """
    reason = backend.availability()
    if reason is not None:
        raise BackendUnavailable(reason)
    if device is not None and torch.device(options.device).type != device:
        raise BackendUnavailable(needs)


class FidelityError(PrunebenchError):
    """A runnable's outputs do not match the eager model, or it is not in eval mode: it must not be timed."""


#: What :func:`missing` says of a package that is not installed (:func:`names_missing_package` looks for it).
NOT_INSTALLED = "is not installed; install it with:"


def missing(module: str, extra: str) -> str | None:
    """None when ``module`` is installed (without importing it), else the one-line install instruction."""
    if importlib.util.find_spec(module) is None:
        return f"{module} {NOT_INSTALLED} {install_hint(extra)}"
    return None


def names_missing_package(reason: str | None) -> bool:
    """Whether an availability reason is a missing package (an extra to install), not a missing device: a run
    refuses the first before it starts and records the second as a skip."""
    return reason is not None and NOT_INSTALLED in reason


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise :class:`BackendUnavailable` naming the extra's install command."""
    reason = missing(module, extra)
    if reason is not None:
        raise BackendUnavailable(reason)
    with quiet_loggers(module, "torch.utils._pytree"):
        return importlib.import_module(module)


@dataclass(frozen=True)
class Tolerance:
    """How close a backend's hidden states must be to the eager model's.

    Attributes:
        max_abs: largest allowed absolute difference of any element (None: not checked).
        min_cosine: smallest allowed cosine similarity of the flattened outputs (None: not checked).
        note: why these numbers (recorded with the check).
        relative: ``max_abs`` is per unit of the reference's largest magnitude (at least 1): fp32 rounding grows
            with the outputs' scale.
    """

    max_abs: float | None = 1e-4
    min_cosine: float | None = None
    note: str = "fp32: same math, only summation order may differ"
    relative: bool = False

    def abs_limit(self, want: torch.Tensor) -> float | None:
        """The largest allowed absolute difference against the reference outputs ``want``."""
        if self.max_abs is None or not self.relative or not want.numel():
            return self.max_abs
        return self.max_abs * max(1.0, float(want.abs().max()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


#: fp32 backends: the same function computed by other kernels, within 1e-4 per unit of the outputs' largest
#: magnitude. *Learned*: a structured-70% all-MiniLM-L6-v2 after its refit (outputs up to 6.6) differs from its
#: own fp64 forward by 3.3e-4 in eager PyTorch and by 1.7e-4 on OpenVINO; an absolute 1e-4 refused OpenVINO and
#: ONNX Runtime (4e-4 from eager) although both were closer to the exact result than eager itself.
FP32 = Tolerance(relative=True, note="fp32: same math, only summation order may differ (1e-4 x the outputs' "
                 "largest magnitude, at least 1)")
#: Dynamic int8 backends. Measured on random and trained ``medium`` encoders: cosine 0.9994-0.9999 and max
#: diff 0.1-0.25 on LayerNorm'd outputs of unit scale; 0.99 leaves room for other models while a broken
#: quantization (a wrong scale, a dropped bias, dropout on) lands far below it.
INT8 = Tolerance(max_abs=None, min_cosine=0.99, note="dynamic int8: rounding error, checked by cosine >= 0.99")


@dataclass
class Runnable:
    """A prepared model: what is called, how it is checked and what it records.

    Attributes:
        backend: registry name of the backend that made it.
        bind: ``bind(batch) -> fn``: pre-converts a batch (e.g. to numpy for ONNX Runtime) and returns the
            zero-argument call that is timed; ``fn()`` returns the hidden states in the backend's own type.
        outputs: ``outputs(batch) -> [B, S, D]`` float32 CPU tensor of the hidden states (fidelity checks).
        modules: torch modules the calls run through, for the eval-mode check before timing ([] for runtimes
            outside torch, which have no training mode once exported).
        tolerance: what the fidelity check against eager demands.
        threads: how intra-op threads are controlled (``"torch.set_num_threads"`` or a fixed session count).
        memory_method: how :func:`~prunebench.backends.cells.runnable_peak_memory` measures a call:
            ``tensors`` (live torch tensors), ``cuda`` (the CUDA allocator) or ``rss-first-call`` (ORT).
        env: backend-specific environment (versions, providers, which quantization path).
        info: what preparation decided (e.g. the sparse format per Linear), recorded with the cell.
        memory: ``memory(batch) -> bytes | None`` for runtimes whose memory torch cannot see (None: torch's
            accounting by ``memory_method``).
    """

    backend: str
    bind: Callable[[Batch], Callable[[], Any]]
    outputs: Callable[[Batch], torch.Tensor]
    modules: list[nn.Module]
    tolerance: Tolerance
    threads: str = "torch.set_num_threads"
    memory_method: str = "tensors"
    env: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    memory: Callable[[Batch], int | None] | None = None

    def training_modules(self) -> list[str]:
        """Names of every submodule (of :attr:`modules`) left in training mode; [] when all are in eval."""
        bad = []
        for i, root in enumerate(self.modules):
            bad += [f"{i}:{name or type(root).__name__}" for name, m in root.named_modules() if m.training]
        return bad


@dataclass(frozen=True)
class PrepareOptions:
    """What a backend needs to know about the run to prepare for it.

    Attributes:
        threads: intra-op threads the timing pins (sessions outside torch are created with this count).
        shapes: the ``(batch_size, seq_len)`` shapes that will be timed (the sparse backend benchmarks its
            kernels at these).
        device: ``cpu`` or ``cuda``.
        seed: seeds any inputs preparation builds.
        calibration: batches of real task text for backends that calibrate (static int8 scales); a backend
            that needs them refuses when none are given, never falls back to random tokens.
    """

    threads: int | None = None
    shapes: tuple[tuple[int, int], ...] = ((1, 128),)
    device: str = "cpu"
    seed: int = 0
    calibration: tuple[Batch, ...] = ()


class Backend(Protocol):
    """An execution backend (see the module docstring)."""

    name: ClassVar[str]
    #: Whether outputs differ from eager beyond fp32 rounding, so accuracy must be evaluated on it.
    changes_numerics: ClassVar[bool]

    def availability(self) -> str | None:
        """None when usable here, else a one-line reason (a missing package names its install command)."""
        ...

    def skip_reason(self, model: nn.Module) -> str | None:
        """None when this backend can express ``model``, else why not (recorded as a skip)."""
        ...

    def prepare(self, model: nn.Module, options: PrepareOptions) -> Runnable:
        """A runnable computing ``model``'s hidden states; ``model`` itself is left exactly as it was."""
        ...
