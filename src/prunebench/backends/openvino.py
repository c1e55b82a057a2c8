"""``openvino`` (fp32), ``openvino-bf16`` and ``openvino-int8`` (NNCF post-training quantization): OpenVINO's CPU
runtime, the one many encoder deployments use.

The encoder (ids [+ mask] -> hidden states) is converted with ``openvino.convert_model`` straight from the
PyTorch module (no ONNX file in between), with dynamic batch and sequence axes, once without a mask input
(batches without padding, as the eager timed call drops an all-ones mask) and, on first need, once with one.
Conversion traces the module, so it runs inside :func:`~prunebench.backends.onnx.preserved_modes`: the shared
model's train/eval flags are exactly what they were before.

*Why the precision is pinned*: on CPUs with native bf16 (AMX, AVX512-BF16) OpenVINO's CPU plugin picks bf16
inference by default, and an "fp32" model then differs from eager by ~3e-2. ``openvino`` pins
``INFERENCE_PRECISION_HINT=f32`` and is checked to the fp32 tolerance; ``openvino-bf16`` asks for bf16 and is
checked by cosine; it is unavailable on CPUs without native bf16, where OpenVINO would silently run f32.

``openvino-int8`` quantizes the converted model with ``nncf.quantize`` (model type TRANSFORMER: the attention
scores' matmuls stay in float), calibrated on :attr:`PrepareOptions.calibration`, real task text the caller
passes; without it the backend refuses (never random tokens).

Compiled models run with ``INFERENCE_NUM_THREADS`` = the run's thread count, one stream, the latency hint and
CPU pinning off: the paired eager call runs in the same process on the same cores, and pinned OpenVINO
workers would hold them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from prunebench.backends.base import (
    FP32,
    BackendUnavailable,
    PrepareOptions,
    Runnable,
    Tolerance,
    ensure_available,
    missing,
    quiet_loggers,
    require,
)
from prunebench.backends.memory import rss_peak
from prunebench.backends.onnx import _EncoderExport, preserved_modes
from prunebench.backends.torch_backends import effective_mask
from prunebench.models.adapters import adapter_for
from prunebench.models.batch import Batch
from prunebench.models.io import is_hf_model

logger = logging.getLogger(__name__)

#: bf16 inference: 8 bits of mantissa on every activation. Measured on random ``medium``: cosine >= 0.999; 0.99
#: leaves room for other models while a wrong conversion lands far below it.
BF16 = Tolerance(max_abs=None, min_cosine=0.99, note="bf16 inference: rounding error, checked by cosine >= 0.99")
#: The compiled-model properties read back into every runnable's ``info``.
SETTINGS = ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "ENABLE_CPU_PINNING")
#: Static int8 (NNCF): activation scales fixed at calibration, not measured per call as dynamic int8 does, so the
#: rounding error is larger. Measured: cosine 0.997 on ``medium``, 0.986 on a ``--quick``-trained ``small``
#: after a structured shrink and refit; 0.98 leaves that room while a broken quantization lands far below it.
STATIC_INT8 = Tolerance(max_abs=None, min_cosine=0.98,
                        note="static int8 (NNCF): calibrated activation scales, checked by cosine >= 0.98")
#: How many calibration batches NNCF's statistics see at most (its default subset is 300 samples).
CALIBRATION_BATCHES = 64


def _openvino() -> Any:
    return require("openvino", "openvino")


def convert_encoder(model: nn.Module, *, with_mask: bool) -> Any:
    """``model``'s encoder as an OpenVINO model with dynamic batch and sequence axes (modes preserved)."""
    ov = _openvino()
    ids = torch.ones(2, 8, dtype=torch.long)  # [2, S]: any valid ids; the axes are made dynamic below
    example: tuple[torch.Tensor, ...] = (ids, torch.ones_like(ids)) if with_mask else (ids,)
    shapes = [ov.PartialShape([-1, -1])] * len(example)
    with preserved_modes(model), warnings.catch_warnings(), torch.no_grad():
        wrapper = _EncoderExport(model, with_mask).eval()  # eval() reaches the shared model: inside the guard
        warnings.simplefilter("ignore")  # tracer warnings
        converted = ov.convert_model(wrapper, example_input=example, input=list(zip(shapes, [ov.Type.i64] * len(
            example), strict=True)))
    return converted


def empty_block_reason(model: nn.Module) -> str | None:
    """Why OpenVINO cannot run ``model``: a Hugging Face layer left with no head or no FFN neuron, else None.

    *Learned*: OpenVINO's CPU plugin gets a zero-width matrix product wrong (a layer with no head: max |diff| 3-5
    on tiny BERT and DistilBERT) or fails to build it (no neuron: "could not create a primitive descriptor"). HF
    modules run such a block as a Linear with an empty side; prunebench's own encoder skips an empty block in
    Python, so nothing zero-width reaches the converter and it converts fine.
    """
    if not is_hf_model(model):
        return None
    adapter = adapter_for(model)
    for index in range(adapter.n_layers):
        if adapter.is_skipped(index):  # never called: its (full-size, zeroed) Linears are not run
            continue
        empty = [what for kind, what in (("heads", "attention head"), ("neurons", "FFN neuron"))
                 if adapter.group_count(kind, index) == 0]
        if empty:
            return (f"layer {index} has no {' and no '.join(empty)} left, and OpenVINO's CPU plugin computes such a "
                    "zero-width matrix product wrongly or not at all")
    return None


def _feeds(batch: Batch, with_mask: bool) -> list[np.ndarray]:
    ids = batch["input_ids"].cpu().numpy().astype(np.int64)  # [B, S]
    if not with_mask:
        return [ids]
    mask = batch.get("attention_mask")
    mask_np = (mask.cpu().numpy() if mask is not None else np.ones_like(ids)).astype(np.int64)  # [B, S]
    return [ids, mask_np]


def compiled_settings(compiled: Any) -> dict[str, str]:
    """What the compiled model actually runs with (read back, not what was asked for): recorded per cell."""
    return {key: str(compiled.get_property(key)) for key in SETTINGS}


class OpenVinoBackend:
    """Convert to OpenVINO, then run a compiled CPU model (fp32, precision pinned)."""

    name: ClassVar[str] = "openvino"
    changes_numerics: ClassVar[bool] = False
    #: OpenVINO's ``INFERENCE_PRECISION_HINT``.
    precision: ClassVar[str] = "f32"
    quantize: ClassVar[bool] = False
    #: Whether :attr:`PrepareOptions.calibration` (task text) is required.
    needs_calibration: ClassVar[bool] = False

    def availability(self) -> str | None:
        reason = missing("openvino", "openvino") or (missing("nncf", "openvino") if self.quantize else None)
        if reason is not None or self.precision != "bf16":
            return reason
        capabilities = _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if "BF16" not in capabilities:
            return (f"{self.name} needs a CPU with native bf16 (AMX or AVX512-BF16); OpenVINO reports "
                    f"{', '.join(capabilities)} here and would run f32")
        return None

    def skip_reason(self, model: nn.Module) -> str | None:
        return empty_block_reason(model)

    def _tolerance(self) -> Tolerance:
        return STATIC_INT8 if self.quantize else BF16 if self.precision == "bf16" else FP32

    def _compile(self, model: nn.Module, with_mask: bool, threads: int, calibration: tuple[Batch, ...]) -> Any:
        ov = _openvino()
        converted = convert_encoder(model, with_mask=with_mask)
        if self.quantize:
            nncf = require("nncf", "openvino")
            data = nncf.Dataset([_feeds(b, with_mask) for b in calibration[:CALIBRATION_BATCHES]])
            # NNCF draws rich progress bars on the process's stdout; the library prints nothing of its own.
            with quiet_loggers("nncf"), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                converted = nncf.quantize(converted, data, model_type=nncf.ModelType.TRANSFORMER,
                                          subset_size=min(len(calibration), CALIBRATION_BATCHES) * max(
                                              int(calibration[0]["input_ids"].shape[0]), 1))
        config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": threads,
                  "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        return ov.Core().compile_model(converted, "CPU", config)


    def prepare(self, model: nn.Module, options: PrepareOptions) -> Runnable:
        ensure_available(self, options, "cpu", f"{self.name} runs on OpenVINO's CPU plugin only")
        if self.needs_calibration and not options.calibration:
            raise BackendUnavailable(f"{self.name} calibrates its int8 scales on task text, and none was given: "
                                     "use `prunebench run --backends openvino-int8` (it passes the run's task text)")
        ov = _openvino()
        threads = options.threads or torch.get_num_threads()
        compiled: dict[bool, Any] = {}
        info: dict[str, Any] = {"first_call_rss_bytes": {}}

        def model_for(with_mask: bool) -> Any:
            if with_mask not in compiled:
                compiled[with_mask] = self._compile(model, with_mask, threads, options.calibration)
                info["compiled"] = compiled_settings(compiled[with_mask])
            return compiled[with_mask]

        model_for(False)  # convert now: preparation, not the first timed call, pays for it

        def shape_key(batch: Batch) -> str:
            return f"{tuple(batch['input_ids'].shape)}{' mask' if effective_mask(batch) is not None else ''}"

        def bind(batch: Batch) -> Callable[[], Any]:
            with_mask = effective_mask(batch) is not None
            feeds = _feeds(batch, with_mask)
            request = model_for(with_mask).create_infer_request()  # one request per bound batch: no shared state
            key = shape_key(batch)
            if key not in info["first_call_rss_bytes"]:
                # Like ORT, OpenVINO allocates outside torch and keeps its buffers: only a first call shows them.
                info["first_call_rss_bytes"][key] = rss_peak(lambda: request.infer(feeds))

            def call() -> Any:
                return request.infer(feeds)[0]

            return call

        def outputs(batch: Batch) -> torch.Tensor:
            return torch.from_numpy(np.array(bind(batch)(), dtype=np.float32))

        def memory(batch: Batch) -> int | None:
            bind(batch)
            return info["first_call_rss_bytes"][shape_key(batch)]

        env: dict[str, Any] = {"openvino": ov.__version__, "device": "CPU", "inference_precision": self.precision,
                               "inference_num_threads": threads, "num_streams": 1, "cpu_pinning": False,
                               "converter": "openvino.convert_model(torch module)"}
        if self.quantize:
            nncf = require("nncf", "openvino")
            env.update(nncf=nncf.__version__, int8_path="nncf.quantize(model_type=TRANSFORMER)",
                       calibration_batches=min(len(options.calibration), CALIBRATION_BATCHES))
        return Runnable(backend=self.name, bind=bind, outputs=outputs, modules=[], tolerance=self._tolerance(),
                        threads=f"openvino INFERENCE_NUM_THREADS={threads}", memory_method="rss-first-call",
                        env=env, info=info, memory=memory)


class OpenVinoBf16Backend(OpenVinoBackend):
    """OpenVINO with bf16 inference precision (CPUs with native bf16 only)."""

    name: ClassVar[str] = "openvino-bf16"
    changes_numerics: ClassVar[bool] = True
    precision: ClassVar[str] = "bf16"


class OpenVinoInt8Backend(OpenVinoBackend):
    """OpenVINO after NNCF post-training int8 quantization, calibrated on the run's task text."""

    name: ClassVar[str] = "openvino-int8"
    changes_numerics: ClassVar[bool] = True
    quantize: ClassVar[bool] = True
    needs_calibration: ClassVar[bool] = True
