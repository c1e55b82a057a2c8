"""Shared fixtures: tiny models so that every test runs in well under a second."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunebench.models import EncoderConfig, LayerConfig, TransformerEncoder, build_encoder


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two OpenMP threads
    fighting other processes were measured ~8x slower than one; the caller's setting is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_config() -> EncoderConfig:
    """A small uniform encoder: vocab 97, d_model 16, 4 heads, 2 layers, d_ff 32."""
    return EncoderConfig.uniform(vocab_size=97, d_model=16, n_heads=4, n_layers=2, d_ff=32, max_positions=64)


@pytest.fixture
def tiny_model(tiny_config: EncoderConfig) -> TransformerEncoder:
    """An initialized tiny encoder in eval mode."""
    return build_encoder(tiny_config, seed=0).eval()


@pytest.fixture
def hetero_config() -> EncoderConfig:
    """Per-layer widths that differ, including a layer with no heads and one with no FFN."""
    return EncoderConfig(
        vocab_size=101,
        d_model=12,
        layers=(LayerConfig(3, 4, 100), LayerConfig(0, 4, 9), LayerConfig(2, 4, 0)),
        max_positions=32,
    )


def random_batch(vocab_size: int, batch: int = 3, seq: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded token ids with a padded tail on the last row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


#: The training budget every end-to-end run of ``small --quick`` passes, so that they share one trained baseline.
QUICK_TRAIN_BUDGET = "20"


@pytest.fixture(scope="session")
def quick_cache(tmp_path_factory) -> Path:
    """One ``PRUNEBENCH_CACHE`` for the end-to-end runs of ``small --quick --train-budget 20``: the tokenizer, the
    corpus and the dense baseline are built by the first run and loaded by the others (the cache's entry lock
    makes concurrent runs train it once), which keeps the suite within its time budget."""
    return tmp_path_factory.mktemp("quick-cache")
