"""semi-structured (2:4) on a capable CUDA GPU: prepared, checked against eager by cosine, 2:4 Linears swapped.

Skipped where there is no GPU of compute capability >= 8.0 (the CPU-only machine this project is built on).
"""

from __future__ import annotations

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
