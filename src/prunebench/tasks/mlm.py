"""The built-in task: masked-language modelling on the Python standard library's source files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from prunebench.models.batch import Batch
from prunebench.models.config import TaskHead
from prunebench.tasks import corpus
from prunebench.tasks.base import SPLIT_NAMES, SplitData, Task, cache_entry_lock, fresh_tmp, publish, stable_hash
from prunebench.tasks.mlm_masking import mask_tokens
from prunebench.tasks.tokenizer import (
    CLS_ID,
    FIRST_REGULAR_ID,
    PAD_ID,
    SEP_ID,
    TOKENIZER_FILE,
    check_tokenizer,
    load_tokenizer,
    recipe,
    tokenizer_hash,
    train_tokenizer,
)

logger = logging.getLogger(__name__)

#: Default cap on training characters. The full stdlib (~10.7M characters) costs ~10 s to tokenize on
#: 2 cores, far more text than a few-minute training budget can read; 4M characters (~1M tokens) keeps
#: first-run preparation to a few seconds while no sequence repeats within the default budgets.
DEFAULT_MAX_CHARS = 4_000_000
#: Validation and test each get this fraction of the training character cap.
EVAL_CHAR_FRACTION = 0.125
_META = "meta.json"


class MLMTask(Task):
    """Masked-token prediction on packed ``[CLS] tokens... [SEP]`` rows of stdlib source code."""

    def __init__(
        self, tokenizer: Tokenizer, splits: dict[str, SplitData], vocab_size: int, seq_len: int, info: dict[str, Any]
    ) -> None:
        self.name = "mlm"
        self.head = TaskHead.MLM
        self.tokenizer = tokenizer
        self.splits = splits
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.num_labels = 0
        self._info = info
        counts = torch.bincount(splits["train"].input_ids.flatten(), minlength=vocab_size)  # [V]
        counts[:FIRST_REGULAR_ID] = 0  # specials are never prediction targets
        self._most_frequent = int(counts.argmax().item())

    def fingerprint(self) -> dict[str, Any]:
        """Corpus fingerprint, tokenizer recipe + hash, sequence length, caps and rows per split."""
        return dict(self._info)

    def trivial_prediction(self) -> int:
        """Most frequent regular token of the training split."""
        return self._most_frequent

    def _label(self, rows: SplitData, index: torch.Tensor, generator: torch.Generator, evaluation: bool) -> Batch:
        return mask_tokens(
            rows.input_ids[index], rows.attention_mask[index], self.vocab_size, generator, all_mask=evaluation
        )


def _pack(ids_per_text: list[list[int]], seq_len: int) -> SplitData:
    """Concatenate texts (``[SEP]`` between them) and cut into ``[CLS] body [SEP]`` rows of ``seq_len``."""
    body = seq_len - 2
    stream: list[int] = []
    for ids in ids_per_text:
        stream.extend(ids)
        stream.append(SEP_ID)
    n_rows = max(1, -(-len(stream) // body))
    flat = np.full(n_rows * body, PAD_ID, dtype=np.int64)
    flat[: len(stream)] = stream
    rows = flat.reshape(n_rows, body)  # [N, S-2]
    lengths = np.full(n_rows, body, dtype=np.int64)  # [N] body tokens per row; only the last can be short
    lengths[-1] = len(stream) - (n_rows - 1) * body
    ids = np.full((n_rows, seq_len), PAD_ID, dtype=np.int64)  # [N, S]
    ids[:, 0] = CLS_ID
    ids[:, 1:-1] = rows
    ids[np.arange(n_rows), lengths + 1] = SEP_ID
    mask = (np.arange(seq_len)[None, :] < (lengths + 2)[:, None]).astype(np.int64)  # [N, S]
    return SplitData(torch.from_numpy(ids), torch.from_numpy(mask))


def build_mlm_task(
    *,
    vocab_size: int,
    seq_len: int = 64,
    cache_dir: str | Path | None = None,
    max_files: int | None = None,
    max_chars: int | None = DEFAULT_MAX_CHARS,
    corpus_root: str | Path | None = None,
    tokenizer: Tokenizer | None = None,
) -> MLMTask:
    """Prepare the stdlib MLM task, from the on-disk cache when a verified copy exists.

    Args:
        vocab_size: the model vocabulary; the tokenizer is trained to at most this size.
        seq_len: tokens per row, including ``[CLS]`` and ``[SEP]``.
        cache_dir: folder for the tokenizer and tokenized splits (None: build in memory every time).
        max_files: keep at most this many files (80/10/10 across splits), for quick tests.
        max_chars: characters of training text read (validation/test get 1/8 of it each); None = all.
        corpus_root: read ``.py`` files from here instead of the stdlib (tests).
        tokenizer: use this tokenizer (e.g. the one saved beside a model) instead of training one.
    """
    if seq_len < 8:
        raise ValueError(f"seq_len must be at least 8, got {seq_len}")
    groups = corpus.select_files(corpus.list_corpus(corpus_root), max_files)
    corpus_fp = corpus.corpus_fingerprint(groups)
    settings: dict[str, Any] = {
        "seq_len": seq_len, "max_files": max_files, "max_chars": max_chars, "tokenizer": recipe(vocab_size),
    }
    if tokenizer is not None:
        check_tokenizer(tokenizer, vocab_size)
        settings["given_tokenizer"] = tokenizer_hash(tokenizer)
    key = stable_hash({"corpus": corpus_fp, **settings})
    folder = Path(cache_dir) / "tasks" / f"mlm-{key}" if cache_dir is not None else None
    with cache_entry_lock(folder):  # a concurrent run with the same cache waits, then reuses this entry
        return _load_or_build(folder, groups, corpus_fp, settings, vocab_size, seq_len, max_chars, tokenizer)


def _load_or_build(
    folder: Path | None, groups: dict[str, list[corpus.CorpusFile]], corpus_fp: dict[str, Any],
    settings: dict[str, Any], vocab_size: int, seq_len: int, max_chars: int | None, tokenizer: Tokenizer | None,
) -> MLMTask:
    """The cached task in ``folder`` if verified, else built (tokenizer trained unless given) and cached."""
    if folder is not None and (folder / _META).is_file():
        task = _load_cached(folder, corpus_fp, settings, vocab_size, seq_len)
        if task is not None:
            return task
    caps = {
        "train": max_chars,
        "val": None if max_chars is None else max(1, int(max_chars * EVAL_CHAR_FRACTION)),
        "test": None if max_chars is None else max(1, int(max_chars * EVAL_CHAR_FRACTION)),
    }
    texts = {s: corpus.read_split(groups[s], caps[s]) for s in SPLIT_NAMES}
    # The trainer breaks frequency ties in hash order, so two trainings on the same text can differ slightly:
    # that is why the tokenizer is cached, saved beside every model, and hashed into the fingerprint.
    tok = tokenizer if tokenizer is not None else train_tokenizer(texts["train"], vocab_size)
    splits = {}
    for s in SPLIT_NAMES:
        encoded = tok.encode_batch(texts[s], add_special_tokens=False)
        splits[s] = _pack([e.ids for e in encoded], seq_len)
    info = {
        "task": "mlm",
        "corpus": corpus_fp,
        **settings,
        "tokenizer_sha": tokenizer_hash(tok),
        "sequences": {s: len(splits[s]) for s in SPLIT_NAMES},
        "tokens": {s: int(splits[s].attention_mask.sum()) for s in SPLIT_NAMES},
    }
    if folder is not None:
        _save_cached(folder, tok, splits, info)
    return MLMTask(tok, splits, vocab_size, seq_len, info)


def _save_cached(folder: Path, tok: Tokenizer, splits: dict[str, SplitData], info: dict[str, Any]) -> None:
    """Write tokenizer, splits (.npy, no pickle) and meta to a temp folder, then rename into place."""
    tmp = fresh_tmp(folder)
    tmp.mkdir(parents=True)
    tok.save(str(tmp / TOKENIZER_FILE))
    for s, data in splits.items():
        np.save(tmp / f"{s}.ids.npy", data.input_ids.numpy().astype(np.int32), allow_pickle=False)
        np.save(tmp / f"{s}.mask.npy", data.attention_mask.numpy().astype(np.int8), allow_pickle=False)
    (tmp / _META).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    publish(tmp, folder)


def _load_cached(
    folder: Path, corpus_fp: dict[str, Any], settings: dict[str, Any], vocab_size: int, seq_len: int
) -> MLMTask | None:
    """The cached task if its meta matches this corpus and these settings exactly; None otherwise."""
    try:
        info = json.loads((folder / _META).read_text())
        if info.get("corpus") != corpus_fp or any(info.get(k) != v for k, v in settings.items()):
            logger.warning("task cache %s does not match the corpus or settings; rebuilding", folder)
            return None
        tok = load_tokenizer(folder / TOKENIZER_FILE, vocab_size)
        if tokenizer_hash(tok) != info.get("tokenizer_sha"):
            logger.warning("task cache %s: tokenizer changed on disk; rebuilding", folder)
            return None
        splits = {}
        for s in SPLIT_NAMES:
            ids = np.load(folder / f"{s}.ids.npy", allow_pickle=False).astype(np.int64)
            mask = np.load(folder / f"{s}.mask.npy", allow_pickle=False).astype(np.int64)
            if ids.shape != mask.shape or ids.ndim != 2 or ids.shape[1] != seq_len or len(ids) != info["sequences"][s]:
                logger.warning("task cache %s: split %s has the wrong shape; rebuilding", folder, s)
                return None
            if ids.min() < 0 or ids.max() >= vocab_size:
                logger.warning("task cache %s: token ids out of range; rebuilding", folder)
                return None
            splits[s] = SplitData(torch.from_numpy(ids), torch.from_numpy(mask))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("task cache %s is unreadable (%s); rebuilding", folder, exc)
        return None
    return MLMTask(tok, splits, vocab_size, seq_len, info)
