"""A tiny MLM task and a briefly trained model on it, shared by the evaluation tests."""

from __future__ import annotations

from prunebench.models import create_model
from prunebench.tasks import build_task, train

VOCAB, SEQ = 300, 32


def mlm_task():
    """The MLM task on a small slice of the stdlib corpus."""
    return build_task("mlm", vocab_size=VOCAB, seq_len=SEQ, max_files=20, max_chars=80_000)


def trained_mlm(task):
    """A 2-layer encoder trained 30 steps on ``task``, in eval mode."""
    model = create_model("custom", vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=2, d_ff=64, max_positions=SEQ)
    train(model, task, 30, lr=3e-3, batch_size=16, n_evals=0)
    return model.eval()
