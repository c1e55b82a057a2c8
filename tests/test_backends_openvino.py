"""OpenVINO backends: fp32 pinned and matching eager, int8 calibrated on real task text (never without it), bf16
only where the CPU has it, threads pinned as asked, and conversion that never flips the shared model's mode."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from prunebench.backends import BACKENDS, FP32, BackendUnavailable, PrepareOptions, check_fidelity
from prunebench.backends import openvino as ov_backend
from prunebench.models import EncoderConfig, build_encoder
from tests.conftest import random_batch

pytest.importorskip("openvino")
pytest.importorskip("nncf")

OPTS = PrepareOptions(threads=1, shapes=((3, 10),))


@pytest.fixture
def model():
    cfg = EncoderConfig.uniform(vocab_size=97, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_positions=64)
    return build_encoder(cfg, seed=0).eval()


def _calibration(n: int = 6) -> tuple:
    return tuple(random_batch(97, seed=i) for i in range(n))


def test_openvino_fp32_matches_eager_to_1e4_with_and_without_padding_and_pins_what_it_says(model):
    runnable = BACKENDS.get("openvino").prepare(model, OPTS)
    assert runnable.tolerance == FP32 and runnable.env["inference_precision"] == "f32"
    padded = random_batch(97)  # last row half padding: the model with a mask input
    full = {**padded, "attention_mask": torch.ones(3, 10, dtype=torch.long)}
    for batch in (full, padded):
        result = check_fidelity(runnable, model, batch)
        assert result.ok and result.max_abs <= 1e-4, result.message
    # read back from the compiled model: f32 even on a bf16 CPU, one thread, one stream, no pinning
    assert runnable.info["compiled"] == {"INFERENCE_PRECISION_HINT": "<Type: 'float32'>", "INFERENCE_NUM_THREADS": "1",
                                         "NUM_STREAMS": "1", "ENABLE_CPU_PINNING": "False"}
    assert all(not m.training for m in model.modules())


def test_conversion_never_changes_any_module_mode(model):
    model.train()
    model.layers[0].attn.eval()  # a mixed state must survive exactly
    before = [m.training for m in model.modules()]
    ov_backend.convert_encoder(model, with_mask=True)
    assert [m.training for m in model.modules()] == before


def test_openvino_int8_needs_task_text_and_quantizes_when_given_it(model):
    backend = BACKENDS.get("openvino-int8")
    with pytest.raises(BackendUnavailable, match="calibrates its int8 scales on task text.*--backends openvino-int8"):
        backend.prepare(model, OPTS)
    runnable = backend.prepare(model, PrepareOptions(threads=1, shapes=((3, 10),), calibration=_calibration()))
    assert runnable.tolerance == ov_backend.STATIC_INT8 and backend.changes_numerics
    result = check_fidelity(runnable, model, random_batch(97, seed=42))
    assert result.ok, result.message
    assert result.max_abs > 1e-3  # really quantized: an fp32 model would match to 1e-5
    assert runnable.env["calibration_batches"] == 6 and "nncf.quantize" in runnable.env["int8_path"]


def test_bf16_is_unavailable_without_native_bf16_and_runs_where_it_exists(model, monkeypatch):
    import openvino as ov

    real = ov.Core.get_property
    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    monkeypatch.setattr(ov.Core, "get_property", lambda self, dev, key: ["FP32", "INT8"]
                        if key == "OPTIMIZATION_CAPABILITIES" else real(self, dev, key))
    reason = BACKENDS.get("openvino-bf16").availability()
    assert reason is not None and "needs a CPU with native bf16" in reason and "would run f32" in reason
    monkeypatch.undo()
    if not native:
        pytest.skip("this CPU has no native bf16: openvino-bf16 cannot run here")
    runnable = BACKENDS.get("openvino-bf16").prepare(model, OPTS)
    result = check_fidelity(runnable, model, random_batch(97))
    assert result.ok and result.max_abs > 1e-5, result.message  # bf16 really differs from fp32


def test_missing_openvino_is_one_line_with_the_extra(model, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name))
    for name in ("openvino", "openvino-int8", "openvino-bf16"):
        assert BACKENDS.get(name).availability() == (
            'openvino is not installed; install it with: pip install -e ".[openvino]"')
        with pytest.raises(BackendUnavailable, match=r'pip install -e "\.\[openvino\]"'):
            BACKENDS.get(name).prepare(model, OPTS)


def test_cuda_is_refused_in_one_line(model):
    with pytest.raises(BackendUnavailable, match="CPU plugin only"):
        BACKENDS.get("openvino").prepare(model, PrepareOptions(device="cuda"))


def test_bench_refuses_openvino_int8_in_one_line_before_loading_anything(capsys):
    from prunebench.cli.main import main

    assert main(["bench", "small", "--backend", "openvino-int8", "--batch-sizes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "calibrates on task text" in err and "run --backends openvino-int8" in err


def test_a_hugging_face_layer_left_empty_is_a_skip_with_its_reason():
    """OpenVINO computes a zero-width matrix product wrongly or not at all; prunebench's own encoder skips empty
    blocks in Python, so it converts fine (hetero widths with an empty layer: checked by the export tests)."""
    pytest.importorskip("transformers")
    from prunebench.backends.cells import prepare_variant
    from prunebench.models.hf import hf_adapter_for
    from tests.hf_tiny import tiny_model

    backend = BACKENDS.get("openvino")
    for kind, what in (("heads", "attention head"), ("neurons", "FFN neuron")):
        model = tiny_model("bert", "BertModel")
        hf_adapter_for(model).keep_groups_(kind, 1, [])
        prepared = prepare_variant(backend, "structured", model, OPTS)
        assert prepared.runnable is None and prepared.skip.startswith(f"layer 1 has no {what} left")
    model = tiny_model("distilbert", "DistilBertModel")
    hf_adapter_for(model).keep_groups_("heads", 1, [0])
    hf_adapter_for(model).keep_groups_("heads", 2, [])
    hf_adapter_for(model).zero_layer_(2)  # emptied, then skipped: never run, so not refused
    assert backend.skip_reason(model) is None
