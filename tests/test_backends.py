"""Execution backends: registry, preparation, fidelity before timing, skips and missing packages."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from prunebench.backends import (
    BACKENDS,
    FP32,
    INT8,
    BackendUnavailable,
    FidelityError,
    PrepareOptions,
    Runnable,
    check_fidelity,
    compare,
    parse_backends,
    time_runnables,
)
from prunebench.backends.base import missing
from prunebench.backends.semistructured import is_two_four
from prunebench.backends.sparse import SparseBackend, SparseLinear, block_density, choose_formats, zero_fraction
from prunebench.backends.torch_backends import CompileBackend, EagerBackend, torch_runnable
from prunebench.bench.records import PairedResult
from prunebench.models import EncoderConfig, build_encoder
from prunebench.pruning import PruneSpec, prune_
from prunebench.results.cell import CellRecord
from tests.conftest import random_batch

OPTS = PrepareOptions(threads=1, shapes=((3, 10),))


@pytest.fixture
def model():
    """d_model 32 (torchao and sparse kernels want a few columns), eval mode."""
    cfg = EncoderConfig.uniform(vocab_size=97, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_positions=64)
    return build_encoder(cfg, seed=0).eval()


def sparsify_(model: nn.Module, fraction: float, seed: int = 0) -> nn.Module:
    """Zero ``fraction`` of every encoder-layer Linear weight at random."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear) and name.startswith("layers."):
                mod.weight[torch.rand(mod.weight.shape, generator=gen) < fraction] = 0.0
    return model


def params_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_registry_names_and_unknown_backend_lists_valid_ones():
    assert BACKENDS.names()[0] == "eager"
    for name in ("int8", "sparse", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8",
                 "compile", "semi-structured"):
        assert name in BACKENDS
    assert parse_backends("eager, int8") == ("eager", "int8")
    with pytest.raises(ValueError, match="'eager' is listed twice"):  # the one list rule: no duplicates
        parse_backends("eager, int8,eager")
    with pytest.raises(ValueError, match="empty item"):
        parse_backends("eager,,int8")
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'; choose from: eager, int8"):
        parse_backends("eager,tensorrt")
    with pytest.raises(ValueError, match="expected comma-separated backends"):
        parse_backends(" , ")


def test_missing_package_is_one_line_with_install_command():
    reason = missing("no_such_package_xyz", "onnx")
    assert reason == "no_such_package_xyz is not installed; install it with: pip install -e \".[onnx]\""


@pytest.mark.parametrize("name", ["eager", "int8", "int8-legacy", "sparse"])
def test_torch_backends_match_eager_and_leave_model_untouched(model, name):
    backend = BACKENDS.get(name)
    if backend.availability() is not None:
        pytest.skip(backend.availability())
    sparsify_(model, 0.9)
    before = copy.deepcopy(model)
    fast = {"warmup": 1, "min_time": 0.0, "min_pairs": 2, "max_time": 0.2, "target_ci": None}
    # margin -1 and no whole-model check: every Linear takes a sparse kernel, so the SparseLinear path is checked.
    be = SparseBackend(margin=-1.0, timing=fast, whole_margin=None) if name == "sparse" else backend
    runnable = be.prepare(model, OPTS)
    if name == "sparse":
        assert runnable.info["sparse_linears"] == 8
    for batch in (random_batch(97), {**random_batch(97), "attention_mask": torch.ones(3, 10, dtype=torch.long)}):
        result = check_fidelity(runnable, model, batch)
        assert result.ok, result.message
        assert result.tolerance == (INT8 if backend.changes_numerics else FP32)
        if backend.changes_numerics:
            assert result.max_abs > 0  # really quantized, not the fp32 model under another name
    assert params_equal(model, before) and not model.training
    assert runnable.training_modules() == []


def test_int8_records_the_quantization_path(model):
    for name, path in (("int8", "torchao"), ("int8-legacy", "torch.ao.quantization.quantize_dynamic")):
        backend = BACKENDS.get(name)
        if backend.availability() is not None:
            continue
        assert path in backend.prepare(model, OPTS).env["int8_path"]


def test_a_model_left_in_training_mode_is_caught_and_not_timed(model):
    batch = random_batch(97)
    wrong = copy.deepcopy(model).train()  # dropout on: outputs differ from eval and change from call to call
    runnable = torch_runnable("eager", wrong, FP32)
    calls = []

    def timer(*args, **kwargs) -> PairedResult:
        calls.append(1)
        raise AssertionError("must not be timed")

    with pytest.raises(FidelityError, match="training mode"):
        time_runnables((EagerBackend().prepare(model, OPTS), model), (runnable, model), batch, timer=timer)
    # Even without the mode check, the outputs themselves fail against eager (dropout p=0.1).
    with torch.inference_mode():
        want = model.encode(batch["input_ids"], batch["attention_mask"])
    assert not compare("eager", runnable.outputs(batch), want, FP32).ok
    assert calls == []


def test_the_fp32_tolerance_scales_with_the_outputs_largest_magnitude():
    """fp32 rounding grows with the outputs' scale: a refitted structured-70% MiniLM (outputs up to 6.6) differs
    from its own fp64 forward by 3.3e-4 in eager, and OpenVINO / ONNX Runtime were refused at 4e-4 by an absolute
    1e-4. Unit-scale outputs keep the absolute 1e-4."""
    want = torch.zeros(2, 5, 8)
    want[0, 0, 0] = 6.6  # [B, S, D]
    assert FP32.abs_limit(want) == pytest.approx(6.6e-4)
    assert compare("x", want + 4e-4, want, FP32).ok
    assert not compare("x", want + 7e-4, want, FP32).ok
    unit = torch.full((2, 5, 8), 0.5)
    assert FP32.abs_limit(unit) == pytest.approx(1e-4)
    assert not compare("x", unit + 2e-4, unit, FP32).ok
    bad = compare("x", want + 7e-4, want, FP32)
    assert "max |diff| 0.0007 > 0.00066" in bad.message


def test_wrong_outputs_are_caught_and_not_timed(model):
    batch = random_batch(97)
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.layers[0].ffn.fc_out.bias[0] += 0.01  # a small, silent numerical bug (one channel)
    runnable = torch_runnable("sparse", broken, FP32)
    calls = []
    with pytest.raises(FidelityError, match=r"sparse does not match eager: max \|diff\|"):
        time_runnables((EagerBackend().prepare(model, OPTS), model), (runnable, model), batch,
                       timer=lambda *a, **k: calls.append(1))
    assert calls == []


def test_time_runnables_times_after_checks(model):
    batch = random_batch(97)
    eager = EagerBackend().prepare(model, OPTS)
    result, fa, fb = time_runnables((eager, model), (eager, model), batch, warmup=1, min_time=0.0, min_pairs=2,
                                    max_time=1.0)
    assert fa.ok and fb.ok and fa.max_abs == 0.0
    assert len(result.ratios) >= 2 and result.speedup > 0


def test_quantized_tolerance_rejects_garbage():
    want = torch.randn(2, 5, 8)
    assert compare("int8", want + 0.01 * torch.randn(2, 5, 8), want, INT8).ok
    bad = compare("int8", torch.randn(2, 5, 8), want, INT8)
    assert not bad.ok and "cosine" in bad.message
    assert not compare("x", want[:, :4], want, FP32).ok
    assert not compare("x", want * float("nan"), want, FP32).ok


def test_sparse_skips_a_dense_or_shrunk_model(model):
    reason = SparseBackend().skip_reason(model)
    assert reason is not None and "50% zeros" in reason
    assert SparseBackend().skip_reason(sparsify_(model, 0.9)) is None


def test_sparse_goes_sparse_only_where_measured_faster(model):
    sparsify_(model, 0.95)
    linear = model.layers[0].ffn.fc_in
    fast = {"warmup": 1, "min_time": 0.0, "min_pairs": 2, "max_time": 0.2, "target_ci": None}
    # A margin no kernel can beat: every token count stays dense, and the record says why.
    chosen, record = choose_formats(linear, [4, 8], threads=1, margin=1e9, timing=fast)
    assert chosen == {} and record["4"]["chosen"] == "dense" and "csr" in record["4"]["measured"]
    # A margin every kernel beats (speedup > 0): the sparse format is taken at the measured counts only.
    chosen, _ = choose_formats(linear, [4, 8], threads=1, margin=-1.0, timing=fast)
    assert set(chosen) == {4, 8}
    sl = SparseLinear(linear, {30: "csr"}, {"csr": linear.weight.detach().to_sparse_csr()})
    x = torch.randn(3, 10, 32)
    with torch.inference_mode():
        assert torch.allclose(sl(x), linear(x), atol=1e-5)  # 30 tokens: the CSR path
        assert torch.equal(sl(x[:1]), linear(x[:1]))  # 10 tokens: not measured, the dense kernel


def test_sparsity_helpers():
    w = torch.zeros(8, 8)
    w[0, 0] = 1.0
    assert zero_fraction(w) == pytest.approx(63 / 64)
    assert block_density(w, 4) == pytest.approx(1 / 4) and block_density(w, 3) is None
    two_four = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 4.0]])
    assert is_two_four(two_four) and not is_two_four(torch.ones(1, 8))


def test_compile_skips_without_a_compiler_and_traces_with_one(model):
    no_cc = CompileBackend(which=lambda name: None)
    assert "C++ compiler" in no_cc.availability()
    with pytest.raises(BackendUnavailable, match="C\\+\\+ compiler"):
        no_cc.prepare(model, OPTS)
    traced = CompileBackend(which=lambda name: "/usr/bin/" + name, compiler_backend="eager").prepare(model, OPTS)
    result = check_fidelity(traced, model, random_batch(97))
    assert result.ok and traced.env["compiler"] == "/usr/bin/g++"


def test_semi_structured_skips_cleanly_without_a_capable_gpu(model):
    backend = BACKENDS.get("semi-structured")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; tests/test_backends_gpu.py covers it")
    assert "CUDA" in backend.availability()
    with pytest.raises(BackendUnavailable, match="CUDA"):
        backend.prepare(model, OPTS)


def test_semi_structured_swaps_only_tiling_two_four_linears_and_runs_dense_as_fp16_baseline():
    # Every variant runs on the backend (dense there is the fp16 baseline a 2:4 gain is read against); only
    # Linears with a 2:4 pattern and both dimensions multiples of 64 become semi-structured tensors.
    backend = BACKENDS.get("semi-structured")
    cfg = EncoderConfig.uniform(vocab_size=97, d_model=128, n_heads=2, n_layers=2, d_ff=256, max_positions=64)
    dense = build_encoder(cfg, seed=0).eval()
    assert backend.skip_reason(dense) is None and backend.eligible(dense) == []
    two_four = copy.deepcopy(dense)
    prune_(two_four, PruneSpec(method="nm", sparsity=0.5))
    swapped = backend.eligible(two_four)
    assert len(swapped) == 2 * 4  # per layer: attention in/out projections and both FFN Linears
    with torch.no_grad():  # one weight off the pattern (3 non-zeros in a group of 4) is no longer swapped
        w = two_four.get_submodule(swapped[0]).weight
        w[0, :4] = 1.0
    assert swapped[0] not in backend.eligible(two_four)


@pytest.mark.parametrize("gone", ["module", "function", "broken"])
def test_int8_legacy_is_a_skip_with_its_reason_once_torch_drops_it(model, monkeypatch, gone):
    import sys
    import types

    from prunebench.backends.cells import prepare_variant

    if gone == "module":  # removed from torch: importing it fails
        monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)
    elif gone == "function":  # the module stays, the function is gone
        monkeypatch.setitem(sys.modules, "torch.ao.quantization", types.ModuleType("torch.ao.quantization"))
    else:  # the module raises on import
        def broken(name, *args, **kwargs):
            raise RuntimeError("torch.ao.quantization was removed")

        monkeypatch.setattr("importlib.import_module", broken)
    backend = BACKENDS.get("int8-legacy")
    reason = backend.availability()
    assert reason is not None and "no longer has torch.ao.quantization.quantize_dynamic; use int8" in reason
    with pytest.raises(BackendUnavailable, match="no longer has"):
        backend.prepare(model, OPTS)
    prepared = prepare_variant(backend, "dense", model, OPTS)  # what a run's backend stage records
    assert prepared.runnable is None and prepared.skip == reason


def _breaks_on_padding(model: nn.Module) -> Runnable:
    """Eager's outputs on unpadded rows, garbage where a row is padded: what a runtime that reproduces random
    unpadded ids but not real (padded, varied) text looks like to the check."""
    eager = EagerBackend().prepare(model, PrepareOptions(threads=1))

    def outputs(batch):
        got = eager.outputs(batch)
        mask = batch.get("attention_mask")
        if mask is not None and bool((mask == 0).any()):
            return torch.randn_like(got)
        return got

    return replace(eager, backend="flaky", outputs=outputs, tolerance=INT8)


def test_fidelity_is_also_checked_on_held_out_task_text(model):
    timed = random_batch(97)
    timed = {**timed, "attention_mask": torch.ones_like(timed["input_ids"])}  # unpadded, as a timed batch is
    text = random_batch(97)  # its last row half padding: real text is padded to the longest row
    flaky = _breaks_on_padding(model)
    alone = check_fidelity(flaky, model, timed)
    assert alone.ok and alone.text is None  # the timed batch alone cannot see it
    both = check_fidelity(flaky, model, timed, text=text)
    assert not both.ok and "does not match eager on held-out task text" in both.message
    assert both.text is not None and not both.text["ok"] and both.text["rows"] == text["input_ids"].shape[0]
    good = EagerBackend().prepare(model, PrepareOptions(threads=1))
    fine = check_fidelity(good, model, timed, text=text)
    assert fine.ok and fine.text == {"max_abs": 0.0, "cosine": pytest.approx(1.0), "ok": True, "rows": 3}
    assert fine.to_dict()["text"]["ok"]


def test_a_backend_cell_that_breaks_on_task_text_is_never_timed(model):
    from prunebench.backends.cells import Prepared, _checked
    from prunebench.bench.settings import BenchSettings

    timed = {**random_batch(97), "attention_mask": torch.ones(3, 10, dtype=torch.long)}
    base = Prepared("dense", "eager", model, runnable=EagerBackend().prepare(model, PrepareOptions(threads=1)))
    cand = Prepared("dense", "flaky", model, runnable=_breaks_on_padding(model))
    settings = BenchSettings(threads=1)
    assert not isinstance(_checked(base, cand, timed, settings), CellRecord)  # timed batch only: it would be timed
    cell = _checked(base, cand, timed, settings, random_batch(97))
    assert isinstance(cell, CellRecord) and cell.status == "error" and cell.speedup is None
    assert cell.extra["backend_status"] == "fidelity" and "held-out task text" in cell.extra["backend_message"]
