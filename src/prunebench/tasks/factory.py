"""``build_task(spec)``: one entry point for the built-in MLM task and user classification files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from prunebench.registry import Registry
from prunebench.tasks.base import Task
from prunebench.tasks.classification import build_classification_task
from prunebench.tasks.mlm import DEFAULT_MAX_CHARS, build_mlm_task
from prunebench.tasks.tokenizer import load_tokenizer

MLM_SEQ_LEN = 64
CLS_SEQ_LEN = 128


@dataclass(frozen=True)
class TaskKind:
    """One kind of task ``build_task`` can build.

    Attributes:
        form: how a spec names it (``mlm``, ``csv:PATH``); the part before ``:`` is the registry key.
        description: one line for ``prunebench list tasks``.
        build: ``build(path, options) -> Task``; ``path`` is the text after ``:`` (None when the form has none).
    """

    form: str
    description: str
    build: Callable[[str | None, dict[str, Any]], Task]

    @property
    def takes_path(self) -> bool:
        """Whether the spec carries a path (``KIND:PATH``)."""
        return ":" in self.form


def _mlm(path: str | None, o: dict[str, Any]) -> Task:
    return build_mlm_task(
        vocab_size=o["vocab_size"], seq_len=o["seq_len"] or MLM_SEQ_LEN, cache_dir=o["cache_dir"],
        max_files=o["max_files"], max_chars=o["max_chars"], corpus_root=o["corpus_root"], tokenizer=o["tokenizer"],
    )


def _classification(kind: str) -> Callable[[str | None, dict[str, Any]], Task]:
    def build(path: str | None, o: dict[str, Any]) -> Task:
        return build_classification_task(
            Path(str(path)), kind, vocab_size=o["vocab_size"], seq_len=o["seq_len"] or CLS_SEQ_LEN,
            cache_dir=o["cache_dir"], text_col=o["text_col"], label_col=o["label_col"], split_col=o["split_col"],
            tokenizer=o["tokenizer"],
        )

    return build


#: Task kinds by key (the part of a spec before ``:``).
TASKS: Registry[TaskKind] = Registry("task")
TASKS.add("mlm", TaskKind("mlm", "masked-language modelling on the Python standard library's source files", _mlm))
TASKS.add("csv", TaskKind("csv:PATH", "text classification from a CSV file (--text-col, --label-col)",
                          _classification("csv")))
TASKS.add("jsonl", TaskKind("jsonl:PATH", "text classification from a JSON-lines file (--text-col, --label-col)",
                            _classification("jsonl")))

#: Accepted task spec forms, for error messages and --help.
TASK_SPECS = tuple(kind.form for _, kind in TASKS)


def build_task(
    spec: str,
    *,
    vocab_size: int,
    seq_len: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    text_col: str = "text",
    label_col: str = "label",
    split_col: str | None = None,
    max_files: int | None = None,
    max_chars: int | None = DEFAULT_MAX_CHARS,
    corpus_root: str | Path | None = None,
    tokenizer: Tokenizer | str | Path | None = None,
    **unused: Any,
) -> Task:
    """Build the task named by ``spec``.

    Args:
        spec: ``"mlm"`` (masked-LM on the stdlib sources), ``"csv:PATH"`` or ``"jsonl:PATH"`` (classification).
        vocab_size: the model vocabulary; the task's tokenizer is trained to at most this size.
        seq_len: tokens per sequence; default 64 for MLM (measured: at equal tokens per step, 64-token rows
            reach twice the accuracy of 128-token rows in a few-minute budget) and 128 for classification
            (texts are truncated to it).
        seed: accepted for symmetry with the other entry points; splits never depend on it, so results
            with different training seeds are measured on the same test data.
        cache_dir: folder for the tokenizer and tokenized data (None: no disk cache).
        text_col, label_col, split_col: classification column names (``split_col`` optional).
        max_files, max_chars, corpus_root: MLM corpus caps and location (tests use small values).
        tokenizer: a tokenizer (or ``tokenizer.json`` path / model folder) to use instead of training one;
            evaluating a saved model passes the tokenizer saved beside it.

    Raises:
        ValueError: unknown spec form, listing the valid ones; DataError for unusable data files.
    """
    if unused:
        raise ValueError(f"unknown task option(s): {', '.join(sorted(unused))}")
    del seed  # documented above: data splits are seed-independent by design
    tok = load_tokenizer(tokenizer, vocab_size) if isinstance(tokenizer, (str, Path)) else tokenizer
    key, sep, path = spec.partition(":")
    kind = TASKS.get(key) if key in TASKS else None
    if kind is None or kind.takes_path != bool(sep and path):
        raise ValueError(f"unknown task {spec!r}; choose from: {', '.join(k.form for _, k in TASKS)}")
    options = {
        "vocab_size": vocab_size, "seq_len": seq_len, "cache_dir": cache_dir, "text_col": text_col,
        "label_col": label_col, "split_col": split_col, "max_files": max_files, "max_chars": max_chars,
        "corpus_root": corpus_root, "tokenizer": tok,
    }
    return kind.build(path if sep else None, options)
