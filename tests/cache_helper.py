"""A separate process that builds one cache entry (tests/test_cache_concurrency.py starts several at once).

Usage: ``python tests/cache_helper.py CACHE_DIR GO_FILE``. It waits until GO_FILE exists (so processes start
their builds together, whatever their import times), slows tokenizer training and dense training by a second
each (so that without a lock their builds would overlap), builds the tiny MLM task and its baseline in
CACHE_DIR, and prints one JSON line: what it trained and hashes of what it got.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from prunebench.models import EncoderConfig
from prunebench.tasks import baseline, mlm
from prunebench.tasks.factory import build_task
from prunebench.tasks.tokenizer import tokenizer_hash

VOCAB, SEQ, DELAY_S = 300, 32, 1.0


def main(cache: str, go: str) -> None:
    torch.set_num_threads(1)
    trained: list[str] = []
    real_tokenizer, real_train = mlm.train_tokenizer, baseline.train

    def slow_tokenizer(*args, **kwargs):
        trained.append("tokenizer")
        time.sleep(DELAY_S)
        return real_tokenizer(*args, **kwargs)

    def slow_train(*args, **kwargs):
        trained.append("baseline")
        time.sleep(DELAY_S)
        return real_train(*args, **kwargs)

    mlm.train_tokenizer, baseline.train = slow_tokenizer, slow_train
    while not Path(go).exists():
        time.sleep(0.01)
    task = build_task("mlm", vocab_size=VOCAB, seq_len=SEQ, max_files=6, max_chars=20_000, cache_dir=cache)
    config = EncoderConfig.uniform(vocab_size=VOCAB, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_positions=64)
    model, info = baseline.load_or_train_baseline(config, task, "3", cache_dir=cache, batch_size=8, lr=2e-3)
    weights = b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())
    print(json.dumps({"trained": trained, "tokenizer": tokenizer_hash(task.tokenizer), "key": info["key"],
                      "weights": hashlib.sha256(weights).hexdigest()[:16]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
