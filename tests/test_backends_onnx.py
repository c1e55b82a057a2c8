"""ONNX Runtime backends: fidelity against eager, pinned threads, and an export that never flips the model's mode."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch

from prunebench.backends import BACKENDS, FP32, INT8, BackendUnavailable, PrepareOptions, check_fidelity
from prunebench.backends.onnx import _EncoderExport, export_encoder
from prunebench.models import EncoderConfig, build_encoder
from tests.conftest import random_batch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

OPTS = PrepareOptions(threads=1, shapes=((3, 10),))


@pytest.fixture
def model():
    cfg = EncoderConfig.uniform(vocab_size=97, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_positions=64)
    return build_encoder(cfg, seed=0).eval()


@pytest.mark.parametrize("name", ["onnxruntime", "onnxruntime-int8"])
def test_ort_matches_eager_with_and_without_padding(model, name):
    runnable = BACKENDS.get(name).prepare(model, OPTS)
    assert runnable.env["intra_op_threads"] == 1 and runnable.threads == "onnxruntime intra_op_num_threads=1"
    assert runnable.memory_method == "rss-first-call" and runnable.memory is not None
    padded = random_batch(97)  # last row half padding: the session with a mask input
    full = {**padded, "attention_mask": torch.ones(3, 10, dtype=torch.long)}
    for batch in (full, padded):
        result = check_fidelity(runnable, model, batch)
        assert result.ok, result.message
    assert set(runnable.info["onnx_bytes"]) == {"no_mask", "mask"}
    if name == "onnxruntime":
        assert runnable.tolerance == FP32 and result.max_abs <= 1e-4
    else:
        assert runnable.tolerance == INT8 and result.max_abs > 0 and "quantize_dynamic" in runnable.env["int8_path"]
    assert not model.training


def test_raw_export_of_a_fresh_wrapper_flips_the_shared_model_into_training(model, tmp_path):
    """Why the guard exists: torch restores the *wrapper's* mode (training, as nn.Module starts) recursively."""
    wrapper = _EncoderExport(model, with_mask=False)
    assert wrapper.training and not model.training
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.ones(1, 4, dtype=torch.long),), str(tmp_path / "m.onnx"), dynamo=False)
    assert model.training  # the silent bug: dropout would now run in every "dense" timing


@pytest.mark.parametrize("training", [False, True])
def test_export_never_changes_any_module_mode(model, tmp_path, training):
    model.train(training)
    model.layers[0].attn.eval()  # a mixed state must survive exactly too
    before = [m.training for m in model.modules()]
    export_encoder(model, tmp_path / "m.onnx", with_mask=True)
    assert [m.training for m in model.modules()] == before


def test_ort_prepare_leaves_the_shared_model_in_eval(model):
    BACKENDS.get("onnxruntime").prepare(model, OPTS)
    assert all(not m.training for m in model.modules())


def test_missing_onnxruntime_is_one_line_with_the_extra(model, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name))
    backend = BACKENDS.get("onnxruntime-int8")
    expected = "onnxruntime is not installed; install it with: pip install -e \".[onnx]\""
    assert backend.availability() == expected
    with pytest.raises(BackendUnavailable) as info:
        backend.prepare(model, OPTS)
    assert str(info.value) == expected


def test_ort_refuses_cuda(model):
    with pytest.raises(BackendUnavailable, match="CPU"):
        BACKENDS.get("onnxruntime").prepare(model, PrepareOptions(device="cuda"))
