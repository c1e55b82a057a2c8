"""``onnxruntime`` (fp32) and ``onnxruntime-int8`` (ORT dynamic quantization): export, then a pinned session.

The encoder (``encode``: ids [+ mask] -> hidden states) is exported with the TorchScript-based exporter
(``dynamo=False``: the maintained dynamo exporter, which needs ``onnxscript``, exported 6-10x slower and its graph
of a per-layer MiniLM ran ~15% slower in ONNX Runtime; ``benchmarks/onnx_exporters.py``, docs/DESIGN.md) with
dynamic batch and sequence axes, once without a mask input (batches without padding, as the eager timed call drops
an all-ones mask) and, on first need, once with one. ``prunebench export --format onnx`` writes the same export
with the mask input.

*Why the export is guarded*: ``torch.onnx.export`` puts the module it exports into eval mode and afterwards
restores *that module's* previous mode recursively. Exporting a fresh wrapper (``nn.Module`` starts in training
mode) around a shared model in eval mode therefore leaves the shared model in training mode: dropout then
runs in every later "dense" timing. The wrapper is put in eval mode first, and every submodule's mode is
saved and restored around the export (:func:`preserved_modes`), so the shared model never changes.

Memory is the growth of the process's peak RSS over a session's first call at each shape: ORT allocates
outside torch's allocator and keeps its arena afterwards, so later calls show no growth.

Sessions run with ``intra_op_num_threads`` = the run's thread count, one inter-op thread, sequential
execution and spinning off: ORT's spinning workers would otherwise keep burning the cores while the paired
eager call runs, and bill ORT's work to eager.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from prunebench.backends.base import (
    FP32,
    INT8,
    PrepareOptions,
    Runnable,
    ensure_available,
    missing,
    require,
)
from prunebench.backends.memory import rss_peak
from prunebench.backends.torch_backends import effective_mask, hidden_fn
from prunebench.models.batch import Batch

logger = logging.getLogger(__name__)

#: ONNX opset of the export.
OPSET = 17


@contextlib.contextmanager
def preserved_modes(model: nn.Module) -> Iterator[None]:
    """Restore the ``training`` flag of every submodule of ``model`` on exit, whatever ran inside."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


class _EncoderExport(nn.Module):
    """What is exported: the encoder's hidden states, with or without an attention mask input."""

    def __init__(self, model: nn.Module, with_mask: bool) -> None:
        super().__init__()
        self.model = model
        self.with_mask = with_mask
        self._fn = hidden_fn(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._fn(input_ids, attention_mask if self.with_mask else None)  # [B, S, D]


def export_encoder(model: nn.Module, path: str | Path, *, with_mask: bool, seq_len: int = 8) -> None:
    """Export ``model``'s encoder to ONNX at ``path`` without changing any module's mode (errors propagate)."""
    ids = torch.ones(2, seq_len, dtype=torch.long)  # [2, S]: any valid ids; axes are dynamic
    args: tuple[torch.Tensor, ...] = (ids, torch.ones_like(ids)) if with_mask else (ids,)
    names = ["input_ids", "attention_mask"] if with_mask else ["input_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes["hidden"] = {0: "batch", 1: "seq"}
    with preserved_modes(model), warnings.catch_warnings(), torch.no_grad():
        wrapper = _EncoderExport(model, with_mask).eval()  # eval() reaches the shared model: inside the guard
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=names, output_names=["hidden"],
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)


class _DropRootWarning(logging.Filter):
    """Drops ORT quantization's advice to pre-process the model (logged on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


#: How ``onnxruntime-int8`` quantizes (recorded in each runnable's env): one int8 scale per weight matrix,
#: activations quantized per tensor at every call. Per-channel weight scales were tried and not taken: on
#: all-MiniLM-L6-v2 they raised the hidden states' cosine to eager on tweets from 0.944 to 0.985 (still below the
#: 0.99 gate), but on the random tiny BERT of the tests they lowered it from >= 0.99 to 0.94-0.98 (AMD EPYC, AVX2
#: without VNNI; a likely cause, not isolated: AVX2's u8 x s8 kernels saturate their int16 pair sums, and
#: per-channel scales fill the int8 range, so they saturate more often). Revisit on a VNNI CPU.
INT8_PATH = "onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)"


def quantize_int8(src: Path, dst: Path, *, extra_options: dict[str, Any] | None = None) -> None:
    """Write ``src``'s ONNX graph with ORT dynamic int8 quantization (:data:`INT8_PATH`) to ``dst``.

    Args:
        src, dst: the fp32 graph and where the quantized one goes.
        extra_options: ORT's ``extra_options`` (e.g. a default tensor type for graphs whose fused ops lack
            shape information).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    drop = _DropRootWarning()
    root.addFilter(drop)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, extra_options=extra_options or {})
    finally:
        root.removeFilter(drop)


class OnnxRuntimeBackend:
    """Export to ONNX, then run it in an ONNX Runtime CPU session (fp32)."""

    name: ClassVar[str] = "onnxruntime"
    changes_numerics: ClassVar[bool] = False
    quantize: ClassVar[bool] = False

    def availability(self) -> str | None:
        return missing("onnx", "onnx") or missing("onnxruntime", "onnx")

    def skip_reason(self, model: nn.Module) -> str | None:
        return None

    def _session(self, model: nn.Module, with_mask: bool, threads: int) -> Any:
        ort = require("onnxruntime", "onnx")
        with tempfile.TemporaryDirectory(prefix="prunebench-onnx-") as tmp:
            path = Path(tmp) / "encoder.onnx"
            export_encoder(model, path, with_mask=with_mask)
            if self.quantize:
                qpath = Path(tmp) / "encoder.int8.onnx"
                quantize_int8(path, qpath)
                path = qpath
            blob = path.read_bytes()
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"]), len(blob)

    def prepare(self, model: nn.Module, options: PrepareOptions) -> Runnable:
        ensure_available(self, options, "cpu", f"{self.name} runs on the CPU execution provider only")
        ort = require("onnxruntime", "onnx")
        onnx = require("onnx", "onnx")
        threads = options.threads or torch.get_num_threads()
        sessions: dict[bool, Any] = {}
        info: dict[str, Any] = {"onnx_bytes": {}, "first_call_rss_bytes": {}}

        def session(with_mask: bool) -> Any:
            if with_mask not in sessions:
                sessions[with_mask], size = self._session(model, with_mask, threads)
                info["onnx_bytes"]["mask" if with_mask else "no_mask"] = size
            return sessions[with_mask]

        session(False)  # export now: preparation, not the first timed call, pays for it

        def shape_key(batch: Batch) -> str:
            mask = effective_mask(batch)
            return f"{tuple(batch['input_ids'].shape)}{' mask' if mask is not None else ''}"

        def memory(batch: Batch) -> int | None:
            bind(batch)  # measures the first call at this shape if it has not run yet
            return info["first_call_rss_bytes"][shape_key(batch)]

        def bind(batch: Batch) -> Callable[[], Any]:
            mask = effective_mask(batch)
            feeds = {"input_ids": batch["input_ids"].cpu().numpy().astype(np.int64)}
            if mask is not None:
                feeds["attention_mask"] = mask.cpu().numpy().astype(np.int64)
            sess = session(mask is not None)
            key = shape_key(batch)
            if key not in info["first_call_rss_bytes"]:
                # ORT keeps its arena between calls, so only a session's first call at a shape shows its memory.
                info["first_call_rss_bytes"][key] = rss_peak(lambda: sess.run(["hidden"], feeds))
            return lambda: sess.run(["hidden"], feeds)[0]

        def outputs(batch: Batch) -> torch.Tensor:
            return torch.from_numpy(np.asarray(bind(batch)(), dtype=np.float32))

        env = {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "providers": ["CPUExecutionProvider"],
               "available_providers": list(ort.get_available_providers()), "opset": OPSET,
               "exporter": "torch.onnx.export(dynamo=False)", "intra_op_threads": threads, "allow_spinning": False,
               "graph_optimization": "ORT_ENABLE_ALL"}
        if self.quantize:
            env["int8_path"] = INT8_PATH
        return Runnable(backend=self.name, bind=bind, outputs=outputs, modules=[], tolerance=INT8 if self.quantize
                        else FP32, threads=f"onnxruntime intra_op_num_threads={threads}",
                        memory_method="rss-first-call", env=env, info=info, memory=memory)


class OnnxRuntimeInt8Backend(OnnxRuntimeBackend):
    """The ONNX export quantized with ORT's dynamic quantization (:data:`INT8_PATH`: int8 weights, per-call
    activation scales)."""

    name: ClassVar[str] = "onnxruntime-int8"
    changes_numerics: ClassVar[bool] = True
    quantize: ClassVar[bool] = True
