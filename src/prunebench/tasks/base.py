"""What every task provides: tokenized splits, labelled batches in the shared format, a fingerprint.

A task holds each split as fixed-length token rows ([N, S] ids and attention mask, plus [N] labels for
classification). Labels for MLM are created per batch by seeded masking; the same seed always yields the
same batches, which is what makes training data order and evaluation reproducible.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from prunebench.errors import PrunebenchError
from prunebench.locking import exclusive_lock
from prunebench.models.batch import Batch
from prunebench.models.config import TaskHead

logger = logging.getLogger(__name__)


def fresh_tmp(folder: Path) -> Path:
    """An empty sibling ``<folder>.tmp`` to write a cache entry into before :func:`publish` renames it."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def publish(tmp: Path, folder: Path) -> None:
    """Move a fully written ``tmp`` folder into place, so a crash never leaves half a cache entry.

    If a concurrent process published the same entry first, its copy (built from the same inputs) is kept.
    """
    shutil.rmtree(folder, ignore_errors=True)
    try:
        tmp.replace(folder)
    except OSError as exc:
        logger.info("cache entry %s written concurrently (%s); keeping the existing copy", folder, exc)
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def cache_entry_lock(folder: Path | None) -> Iterator[None]:
    """Hold the lock of the cache entry ``folder`` while it is looked up and, on a miss, built and published.

    A second process asking for the same entry waits here, then finds the first one's entry and reuses it,
    instead of building its own copy (tokenizer training is not bit-reproducible, so two copies would give
    two different tokenizers and, downstream, two different dense models for one config). None: no cache.
    """
    if folder is None:
        yield
        return
    # <root>/<kind>/<entry> is locked by <root>/locks/<kind>-<entry>.lock: outside the kind's folder, whose
    # listing stays the entries alone, and never inside the entry, which is renamed into place when built.
    locks = folder.parent.parent / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(locks / f"{folder.parent.name}-{folder.name}.lock", wait=True):
        yield


SPLIT_NAMES = ("train", "val", "test")
#: Evaluation defaults: a fixed, seeded sample of the split, big enough for a ~0.5% standard error on MLM
#: accuracy and small enough to evaluate in seconds on 2 cores.
DEFAULT_EVAL_BATCHES = 16
DEFAULT_EVAL_BATCH_SIZE = 32


class DataError(PrunebenchError):
    """A task's data file is missing, unreadable or unusable; the message is one line for the user."""


@dataclass
class SplitData:
    """One split as padded token rows.

    Attributes:
        input_ids: [N, S] long.
        attention_mask: [N, S] long, 1 real / 0 pad.
        labels: [N] long class ids (classification) or None (MLM, labels come from masking).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def stable_hash(data: Any, length: int = 16) -> str:
    """Short hex digest of JSON-ready ``data`` (key order independent)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()[:length]


class BatchSource(ABC):
    """Rows of named splits that become labelled batches in the shared format, reproducibly from a generator.

    The built-in tasks (:class:`Task`) and Hugging Face text through a model's own tokenizer
    (:class:`~prunebench.tasks.hf_text.TokenizedTexts`) are both sources, so training streams and
    :func:`calibration_batches` are written once for every model.
    """

    name: str

    @abstractmethod
    def num_sequences(self, split: str) -> int:
        """Rows in ``split``."""

    @abstractmethod
    def batch(self, split: str, index: torch.Tensor, generator: torch.Generator, *, evaluation: bool) -> Batch:
        """Rows ``index`` of ``split`` as a labelled batch; ``generator`` draws any masking (``evaluation``:
        evaluation-style masking)."""

    def train_stream(self, batch_size: int, seed: int = 0, split: str = "train") -> Iterator[Batch]:
        """Endless shuffled training batches (fresh order and masking every epoch), fixed by ``seed``."""
        n = self.num_sequences(split)
        if n == 0:
            raise ValueError(f"the {split!r} split of task {self.name!r} is empty")
        generator = torch.Generator().manual_seed(seed)
        while True:
            order = torch.randperm(n, generator=generator)  # [N]
            for start in range(0, n, batch_size):
                yield self.batch(split, order[start : start + batch_size], generator, evaluation=False)


def calibration_batches(
    source: BatchSource | Sequence[BatchSource], n_sequences: int, batch_size: int = 8, split: str = "train",
    seed: int = 0,
) -> list[Batch]:
    """``n_sequences`` labelled sequences of ``split`` (a seeded sample) for activation- or gradient-based
    pruning criteria, the refit and held-out checks; the one way every run makes them.

    Batches carry labels (training-style masking for the built-in MLM task) so gradient criteria such as
    Taylor can compute ``task_loss``; the selection and masking are fixed by ``seed``. The sample is the
    first ``n_sequences`` of the seeded permutation :meth:`BatchSource.train_stream` starts with (all rows
    when the split holds fewer).

    A list of sources is a calibration mix (``--calib-task``): each gives an equal share of ``n_sequences``
    (the first ones one more when it does not divide), drawn with its own seed (``seed + i``), and their
    batches alternate, so no source's text is only at the end. A batch never mixes sources (their rows
    differ in labels and padding).

    Raises:
        ValueError: ``n_sequences`` or ``batch_size`` is not positive, or the split is empty.
    """
    if n_sequences <= 0 or batch_size <= 0:
        raise ValueError(f"n_sequences and batch_size must be positive, got {n_sequences} and {batch_size}")
    if not isinstance(source, BatchSource):
        sources = list(source)
        shares = [n_sequences // len(sources) + (i < n_sequences % len(sources)) for i in range(len(sources))]
        parts = [calibration_batches(src, share, batch_size, split, seed + i)
                 for i, (src, share) in enumerate(zip(sources, shares, strict=True)) if share]
        return [b for group in itertools.zip_longest(*parts) for b in group if b is not None]
    n = source.num_sequences(split)
    if n == 0:
        raise ValueError(f"the {split!r} split of task {source.name!r} is empty")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)[: min(n_sequences, n)]  # [n_sequences]
    return [
        source.batch(split, order[s : s + batch_size], generator, evaluation=False)
        for s in range(0, len(order), batch_size)
    ]


def mixed_stream(sources: Sequence[BatchSource], batch_size: int, seed: int = 0,
                 split: str = "train") -> Iterator[Batch]:
    """Endless training batches taking turns over ``sources`` (each its own :meth:`BatchSource.train_stream`,
    seeded ``seed + i``): equal shares of a calibration mix for recovery training."""
    streams = [src.train_stream(batch_size, seed + i, split) for i, src in enumerate(sources)]
    while True:
        for stream in streams:
            yield next(stream)


class Task(BatchSource):
    """Base class of the accuracy tasks.

    Attributes:
        name: short name, e.g. ``"mlm"`` or ``"cls:reviews"``.
        head: the model head the task needs.
        tokenizer: the trained tokenizer (its ids fit ``vocab_size``).
        vocab_size: the model vocabulary this task was built for.
        seq_len: row length S of every split.
        num_labels: classes (classification); 0 for MLM.
        splits: ``{"train", "val", "test"}`` -> :class:`SplitData`.
    """

    name: str
    head: TaskHead
    tokenizer: Tokenizer
    vocab_size: int
    seq_len: int
    num_labels: int
    splits: dict[str, SplitData]

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-ready description of the exact data (corpus/file hash, tokenizer, lengths); recorded with results."""

    @abstractmethod
    def trivial_prediction(self) -> int:
        """The constant prediction of the trivial baseline (most frequent train token / majority class)."""

    @abstractmethod
    def _label(self, rows: SplitData, index: torch.Tensor, generator: torch.Generator, evaluation: bool) -> Batch:
        """Turn rows ``index`` of a split into a labelled batch."""

    def key(self) -> str:
        """Short hash of :meth:`fingerprint`; used in cache keys."""
        return stable_hash(self.fingerprint())

    def model_overrides(self) -> dict[str, Any]:
        """``create_model`` keyword arguments a model for this task needs (vocab, head, classes)."""
        out: dict[str, Any] = {"vocab_size": self.vocab_size, "head": self.head.value}
        if self.head is TaskHead.CLS:
            out["num_labels"] = self.num_labels
        return out

    def split(self, name: str) -> SplitData:
        """The rows of split ``name``; ValueError lists the valid names."""
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; choose from: {', '.join(SPLIT_NAMES)}")
        return self.splits[name]

    def num_sequences(self, split: str) -> int:
        """Rows in ``split``."""
        return len(self.split(split))

    def batch(self, split: str, index: torch.Tensor, generator: torch.Generator, *, evaluation: bool) -> Batch:
        """Rows ``index`` of ``split`` as a labelled batch, trailing all-padding columns trimmed."""
        batch = self._label(self.split(split), index, generator, evaluation)
        width = int(batch["attention_mask"].sum(dim=0).nonzero().max().item()) + 1 if len(index) else 0
        if width < batch["input_ids"].shape[1]:
            # Classification rows are padded to seq_len; attention over padding is wasted work.
            batch = {k: (v[:, :width] if v.dim() == 2 else v) for k, v in batch.items()}
        return batch

    def eval_batches(
        self,
        split: str = "test",
        *,
        batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
        max_batches: int | None = DEFAULT_EVAL_BATCHES,
        seed: int = 0,
    ) -> list[Batch]:
        """A fixed, seeded sample of ``split`` as labelled batches (evaluation masking for MLM).

        The sample is spread over the whole split (a seeded permutation), not its first files, and does
        not depend on any model, so every model evaluated with the same seed sees identical inputs.
        """
        n = self.num_sequences(split)
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=generator)  # [N]
        if max_batches is not None:
            order = order[: max_batches * batch_size]
        return [
            self.batch(split, order[s : s + batch_size], generator, evaluation=True)
            for s in range(0, len(order), batch_size)
        ]
