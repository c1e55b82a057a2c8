"""Accuracy evaluated on a backend runs the task on the backend's hidden states."""

from __future__ import annotations

import pytest
import torch

from prunebench.backends import BACKENDS, FP32, PrepareOptions
from prunebench.backends.evaluation import backend_encoder, evaluate_on_backend
from prunebench.backends.torch_backends import torch_runnable
from prunebench.tasks import evaluate
from tests.tiny_mlm import SEQ, mlm_task, trained_mlm

OPTS = PrepareOptions(threads=1, shapes=((8, SEQ),))
KW = {"max_batches": 2, "batch_size": 8, "seed": 3}


@pytest.fixture(scope="module")
def task():
    return mlm_task()


@pytest.fixture(scope="module")
def trained(task):
    return trained_mlm(task)



def test_eager_runnable_gives_the_eager_evaluation(task, trained):
    runnable = BACKENDS.get("eager").prepare(trained, OPTS)
    assert evaluate_on_backend(trained, runnable, task, **KW) == evaluate(trained, task, **KW)


def test_quantized_backend_is_evaluated_on_its_own_numerics(task, trained):
    backend = BACKENDS.get("int8-legacy")
    if backend.availability() is not None:  # torch dropped torch.ao.quantization: tests/test_backends.py covers it
        pytest.skip(backend.availability())
    runnable = backend.prepare(trained, OPTS)
    got = evaluate_on_backend(trained, runnable, task, reference=trained, **KW)
    want = evaluate(trained, task, **KW)
    assert got.loss != want.loss  # int8 numerics, not the fp32 model's
    assert abs(got.accuracy - want.accuracy) < 0.05 and got.agreement > 0.9


def test_the_runnable_really_computes_the_hidden_states(task, trained):
    def zeros(batch):
        return torch.zeros(*batch["input_ids"].shape, 32)

    broken = torch_runnable("eager", trained, FP32)
    broken.outputs = zeros
    proxy = backend_encoder(trained, broken)
    assert torch.equal(proxy.encode(torch.ones(2, 4, dtype=torch.long)), torch.zeros(2, 4, 32))
    assert trained.encode(torch.ones(2, 4, dtype=torch.long)).abs().sum() > 0  # the source is untouched
    assert evaluate_on_backend(trained, broken, task, **KW).loss != evaluate(trained, task, **KW).loss
