"""semi-structured (2:4) on a capable CUDA GPU: prepared, checked against eager by cosine, 2:4 Linears swapped.

Skipped where there is no GPU of compute capability >= 8.0 (the CPU-only machine this project is built on).
"""

from __future__ import annotations

import copy

import pytest
import torch

from prunebench.backends import BACKENDS, PrepareOptions, check_fidelity
from prunebench.models import EncoderConfig, build_encoder
from prunebench.pruning import PruneSpec, prune_

pytestmark = pytest.mark.gpu


def _capable() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


@pytest.mark.skipif(not _capable(), reason="needs a CUDA GPU with compute capability >= 8.0")
def test_semi_structured_runs_two_four_linears_and_matches_eager():
    cfg = EncoderConfig.uniform(vocab_size=97, d_model=128, n_heads=2, n_layers=1, d_ff=256, max_positions=128)
    model = build_encoder(cfg, seed=0).eval()
    prune_(model, PruneSpec(method="nm", sparsity=0.5))
    model = model.cuda()
    backend = BACKENDS.get("semi-structured")
    assert backend.availability() is None and backend.skip_reason(model) is None
    runnable = backend.prepare(model, PrepareOptions(device="cuda", shapes=((8, 64),)))
    assert len(runnable.info["semi_structured_linears"]) == 4
    ids = torch.randint(1, 97, (8, 64), device="cuda")
    result = check_fidelity(runnable, model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert result.ok, result.message


@pytest.mark.skipif(not _capable(), reason="needs a CUDA GPU with compute capability >= 8.0")
def test_models_on_the_gpu_are_evaluated_on_cpu_built_batches_eagerly_and_on_semi_structured():
    # A run with --device cuda evaluates models that live on the GPU; the task's batches are built on the CPU.
    from prunebench.backends.evaluation import evaluate_on_backend
    from prunebench.tasks import evaluate
    from tests.tiny_mlm import SEQ, mlm_task, trained_mlm

    task = mlm_task()
    cpu_model = trained_mlm(task)
    kw = {"max_batches": 2, "batch_size": 8, "seed": 3}
    on_cpu = evaluate(cpu_model, task, **kw)
    gpu_model = copy.deepcopy(cpu_model).cuda()
    on_gpu = evaluate(gpu_model, task, reference=gpu_model, **kw)
    assert on_gpu.n_predictions == on_cpu.n_predictions
    assert abs(on_gpu.accuracy - on_cpu.accuracy) <= 2 / on_cpu.n_predictions  # fp32 kernels may flip a tie
    assert on_gpu.agreement == 1.0
    runnable = BACKENDS.get("semi-structured").prepare(gpu_model, PrepareOptions(device="cuda", shapes=((8, SEQ),)))
    on_fp16 = evaluate_on_backend(gpu_model, runnable, task, reference=gpu_model, **kw)
    assert on_fp16.n_predictions == on_cpu.n_predictions and on_fp16.agreement > 0.9
