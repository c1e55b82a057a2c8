"""How much memory a model takes: parameters, non-zeros, bytes on disk, and the peak of one forward.

What each figure includes:

* :func:`parameter_report` counts ``model.parameters()`` once each (a tied weight such as the MLM decoder
  sharing the token embedding counts once). Buffers, gradients, optimizer state and Python objects are
  excluded. ``nonzero_*`` counts entries that are not exactly 0.0, i.e. what unstructured pruning removed
  in principle; dense storage still holds the zeros, so ``param_bytes`` does not shrink with it.
* :func:`disk_bytes` is the size of every file in a saved model folder (weights + config.json), as stored.
* :func:`peak_forward_memory` is the extra memory one call needs above what was allocated before it
  (activations, temporaries, the output); parameters and inputs, allocated before, are excluded.
  CPU, ``method="tensors"`` (default): live-tensor accounting. A ``TorchDispatchMode`` sees every
  operator; each output whose storage is new (not a view of an input, not in-place) adds its storage
  bytes, and a finalizer subtracts them when the storage is freed; the maximum of the running total is
  the peak. It counts activations and outputs exactly, but not scratch buffers a kernel allocates and
  frees internally (e.g. fused attention's per-thread blocks), allocator caching or fragmentation, so it
  is a lower bound on RSS growth. It is silent and deterministic.
  CPU, ``method="profiler"``: the torch profiler's memory accounting: every allocation and free through
  PyTorch's CPU allocator (kernel scratch included) replayed in time order. Also a lower bound on RSS
  (allocations outside PyTorch's allocator are not seen); the profiler writes two lines to stderr.
  CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation at the start; reserved-but-unused cache,
  the CUDA context and library workspaces created earlier are excluded.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from prunebench.bench.inputs import parse_device
from prunebench.bench.records import MemoryReport

logger = logging.getLogger(__name__)

#: Name the profiler gives its allocation/free records.
_MEMORY_EVENT = "[memory]"

#: CPU peak-memory methods of :func:`peak_forward_memory`.
CPU_METHODS = ("tensors", "profiler")


def parameter_report(model: nn.Module, directory: str | Path | None = None) -> MemoryReport:
    """Parameter count, bytes, non-zero count/bytes and (if ``directory`` is given) bytes on disk."""
    count = size = nonzero = nonzero_bytes = 0
    with torch.no_grad():
        for p in model.parameters():  # parameters() yields each shared tensor once
            n = int(torch.count_nonzero(p).item())
            count += p.numel()
            size += p.numel() * p.element_size()
            nonzero += n
            nonzero_bytes += n * p.element_size()
    disk = disk_bytes(directory) if directory is not None else None
    return MemoryReport(
        param_count=count, param_bytes=size, nonzero_count=nonzero, nonzero_bytes=nonzero_bytes, disk_bytes=disk
    )


def disk_bytes(directory: str | Path) -> int:
    """Total size in bytes of the regular files in a saved model folder (not recursive).

    Raises:
        ValueError: the folder does not exist.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ValueError(f"no model folder at {folder}")
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def peak_forward_memory(fn: Callable[[], Any], device: str | torch.device = "cpu", method: str = "tensors") -> int:
    """Peak bytes allocated by one call of ``fn`` above the level at its start (see the module docstring).

    Args:
        fn: the call, inputs already built (e.g. ``lambda: model.encode(ids, mask)``).
        device: where ``fn`` computes; ``cpu`` or an available ``cuda`` device.
        method: CPU accounting, ``"tensors"`` or ``"profiler"`` (ignored on CUDA).

    Raises:
        ValueError: CUDA requested without CUDA, an unknown method, or an unsupported device type.
    """
    if method not in CPU_METHODS:
        raise ValueError(f"unknown peak-memory method {method!r}; choose from: {', '.join(CPU_METHODS)}")
    dev = parse_device(device)
    if dev.type == "cuda":
        return _peak_cuda(fn, dev)
    return _peak_cpu_profiler(fn) if method == "profiler" else _peak_cpu_tensors(fn)


def _peak_cuda(fn: Callable[[], Any], dev: torch.device) -> int:
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    with torch.inference_mode():
        fn()
    torch.cuda.synchronize(dev)
    return int(torch.cuda.max_memory_allocated(dev) - before)


class _LiveTensorBytes(TorchDispatchMode):
    """Keeps a running total of the bytes of tensor storages created by operators, and its maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}  # storage data_ptr -> bytes, for storages created inside the mode
        self.current = 0
        self.peak = 0
        self.finalizers: list[weakref.finalize] = []

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        # Outputs sharing an input's storage are views or in-place results: no new memory.
        seen = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in seen or key in self.live:
                continue
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            # The storage's Python object lives exactly as long as the storage, so this fires on its free.
            self.finalizers.append(weakref.finalize(storage, self._release, key))
        return out


def _peak_cpu_tensors(fn: Callable[[], Any]) -> int:
    mode = _LiveTensorBytes()
    with torch.inference_mode(), mode:
        fn()
    for fin in mode.finalizers:  # storages that outlive the call must not call back into the dead mode
        fin.detach()
    return mode.peak


def _peak_cpu_profiler(fn: Callable[[], Any]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Each "[memory]" record is one allocation (+bytes) or free (-bytes) made during the call.
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == _MEMORY_EVENT]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += int(event.nbytes())
        peak = max(peak, current)
    logger.debug("peak_forward_memory: %d allocation records, peak %d bytes", len(events), peak)
    return peak
