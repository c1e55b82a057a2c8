"""The ``sparse`` backend's whole-model check: a token count whose sparse model is slower falls back to dense."""

from __future__ import annotations

import time

import pytest
import torch

from prunebench.backends import PrepareOptions, check_fidelity
from prunebench.backends import sparse as sparse_mod
from prunebench.backends.sparse import SparseBackend, SparseLinear
from prunebench.bench.timing import time_paired
from prunebench.models import EncoderConfig, build_encoder
from tests.conftest import random_batch
from tests.test_backends import sparsify_

FAST = {"warmup": 1, "min_time": 0.0, "min_pairs": 2, "max_time": 0.2, "target_ci": None}
WHOLE_FAST = {"warmup": 1, "min_time": 0.0, "min_pairs": 4, "max_time": 2.0, "target_ci": None}
OPTS = PrepareOptions(threads=1, shapes=((3, 10), (1, 10)))


@pytest.fixture
def model():
    cfg = EncoderConfig.uniform(vocab_size=97, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_positions=64)
    return sparsify_(build_encoder(cfg, seed=0).eval(), 0.9)


def sparse_modules(runnable) -> list[SparseLinear]:
    return [m for m in runnable.modules[0].modules() if isinstance(m, SparseLinear)]


def test_a_slower_sparse_format_falls_back_to_dense_everywhere(model, monkeypatch):
    real = sparse_mod._sparse_matmul

    def slow(weight_sp, bias, x2):  # a format whose kernel is correct but 2 ms slower per call
        time.sleep(0.002)
        return real(weight_sp, bias, x2)

    monkeypatch.setattr(sparse_mod, "_sparse_matmul", slow)
    # margin -1: the micro-benchmark picks the (slow) format everywhere; only the whole-model check can undo it.
    runnable = SparseBackend(margin=-1.0, timing=FAST, whole_timing=WHOLE_FAST).prepare(model, OPTS)
    whole = runnable.info["whole_model"]
    assert set(whole) == {"30", "10"}
    for entry in whole.values():
        assert entry["kept"] == "dense" and "did not clear 1" in entry["why"]
        assert entry["attempts"][0]["set"] == "chosen" and entry["attempts"][0]["ci"][1] < 1.0
    # Dense at every token count: the plain Linears are back, so the runnable computes exactly what zeros does.
    assert runnable.info["sparse_linears"] == 0 and sparse_modules(runnable) == []
    assert runnable.info["sparse_by_tokens"] == {"10": 0, "30": 0}
    assert check_fidelity(runnable, model, random_batch(97)).ok
    # The per-Linear measurements that chose the format are still recorded beside the whole-model ones.
    assert runnable.info["linears"]["layers.0.ffn.fc_in"]["by_tokens"]["30"]["chosen"] == "csr"


def paired_sleeps(candidate_slower: bool):
    """A fake whole-model timer: runs both real calls once, then times sleeps standing in for them."""
    calls = []

    def timer(dense_fn, sparse_fn, **kwargs):
        dense_fn(), sparse_fn()  # both models are callable at the real shape
        calls.append(kwargs["threads"])
        slow, fast = (lambda: time.sleep(0.002)), (lambda: None)
        return time_paired(*((fast, slow) if candidate_slower else (slow, fast)), **{**kwargs, **WHOLE_FAST})

    return timer, calls


@pytest.mark.parametrize("slower", [True, False])
def test_the_whole_model_check_decides_with_an_injected_clock(model, slower):
    timer, calls = paired_sleeps(slower)
    runnable = SparseBackend(margin=-1.0, timing=FAST, timer=timer).prepare(model, OPTS)
    assert calls == [1, 1]  # one check per token count, at the pinned thread count
    for tokens in ("10", "30"):
        entry = runnable.info["whole_model"][tokens]
        assert entry["kept"] == ("dense" if slower else "chosen")
        assert (entry["attempts"][0]["ci"][1] < 1.0) if slower else (entry["attempts"][0]["ci"][0] > 1.0)
    assert runnable.info["sparse_linears"] == (0 if slower else 8)
    assert len(sparse_modules(runnable)) == (0 if slower else 8)
    assert check_fidelity(runnable, model, random_batch(97)).ok


def test_the_strong_set_is_kept_when_only_it_wins(model):
    calls = []

    def timer(dense_fn, sparse_fn, **kwargs):  # the first check (every chosen Linear) slower, the second faster
        calls.append(1)
        slow, fast = (lambda: time.sleep(0.002)), (lambda: None)
        return time_paired(*((fast, slow) if len(calls) == 1 else (slow, fast)), **{**kwargs, **WHOLE_FAST})

    backend = SparseBackend(margin=-1.0, timing=FAST, fallback_margin=1.0, timer=timer)
    # Make the strong set a strict subset: only fc_in's micro-benchmark "won by a lot".
    real_choose = sparse_mod.choose_formats

    def choose(linear, token_counts, **kwargs):
        formats, record = real_choose(linear, token_counts, **kwargs)
        low = 5.0 if linear.out_features == 64 else 0.5
        for r in record.values():
            r["measured"][r["chosen"]]["ci"][0] = low
        return formats, record

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sparse_mod, "choose_formats", choose)
        runnable = backend.prepare(model, PrepareOptions(threads=1, shapes=((3, 10),)))
    entry = runnable.info["whole_model"]["30"]
    assert [a["set"] for a in entry["attempts"]] == ["chosen", "strong"] and entry["kept"] == "strong"
    assert entry["attempts"][1]["linears"] == 2 and runnable.info["sparse_linears"] == 2
    assert type(model.layers[0].ffn.fc_in) is torch.nn.Linear  # the model itself is untouched
    assert check_fidelity(runnable, model, random_batch(97)).ok
