"""The one task registry (:data:`TASKS`): every task kind, the kinds of model it applies to, and its readers.

``build_task(spec)`` builds our encoder's task (token rows of its own tokenizer); :func:`task_texts` reads a
pretrained encoder's text (its own tokenizer reads it later). ``prunebench list tasks`` prints the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from prunebench.registry import Registry
from prunebench.tasks.base import Task
from prunebench.tasks.classification import build_classification_task
from prunebench.tasks.hf_text import (
    BUILTIN_TASK,
    TextTask,
    corpus_text_task,
    labelled_text_task,
    plain_text_task,
)
from prunebench.tasks.mlm import DEFAULT_MAX_CHARS, build_mlm_task
from prunebench.tasks.tokenizer import load_tokenizer

MLM_SEQ_LEN = 64
CLS_SEQ_LEN = 128


#: The kinds of model a task can apply to: our own encoder (a preset, trained on the task), and a pretrained
#: Hugging Face encoder by its head (``ArchAdapter.head_kind``).
MODEL_KINDS: dict[str, str] = {
    "preset": "prunebench encoder preset (small, medium, large)", "base": "pretrained base / sentence encoder",
    "cls": "pretrained classifier", "mlm": "pretrained masked LM",
}
#: What a task does for a kind of model: it scores it (and calibrates it), or it only calibrates it.
SCORE, CALIB = "score", "calib"
#: The task a pretrained base or classifier encoder is scored on when the run's default ``mlm`` names none: a
#: pretrained encoder is not retrained on our corpus, and a probe (or a classifier head) needs labels.
PRETRAINED_DEFAULT = BUILTIN_TASK


@dataclass(frozen=True)
class TaskKind:
    """One kind of task: how a spec names it, which kinds of model it applies to and how, and how it is read.

    Attributes:
        form: how a spec names it (``mlm``, ``csv:PATH``); the part before ``:`` is the registry key.
        description: one line for ``prunebench list tasks``.
        uses: model kind (:data:`MODEL_KINDS`) -> :data:`SCORE` or :data:`CALIB`; a kind not named cannot use it.
        refusals: model kind -> why it cannot use this task, for kinds left out of ``uses`` (one line).
        build: our encoder's task, ``build(path, options) -> Task`` (None where ``uses`` has no ``preset``).
        texts: a pretrained encoder's text, ``texts(path, corpus_root) -> TextTask`` (its own tokenizer reads it).
    """

    form: str
    description: str
    uses: dict[str, str]
    refusals: dict[str, str] = field(default_factory=dict)
    build: Callable[[str | None, dict[str, Any]], Task] | None = None
    texts: Callable[[str | None, Path | None], TextTask] | None = None

    @property
    def takes_path(self) -> bool:
        """Whether the spec carries a path (``KIND:PATH``)."""
        return ":" in self.form

    def use(self, model_kind: str, role: str) -> None:
        """Raise unless a ``model_kind`` model can use this task for ``role`` (scoring also calibrates).

        Raises:
            ValueError: one line saying why, and what to do instead.
        """
        have = self.uses.get(model_kind)
        if have == SCORE or (have == CALIB and role == CALIB):
            return
        what, reason = MODEL_KINDS[model_kind], self.refusals.get(model_kind, "it has no reader for it")
        if have == CALIB:
            raise ValueError(f"--task {self.form} cannot score a {what}: {reason}; use it with --calib-task")
        raise ValueError(f"task {self.form} does not apply to a {what}: {reason}")


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


def _labelled_texts(kind: str) -> Callable[[str | None, Path | None], TextTask]:
    def texts(path: str | None, corpus_root: Path | None) -> TextTask:
        return labelled_text_task(kind if path is None else f"{kind}:{path}")

    return texts


_UNLABELLED = "unlabelled text cannot fit or score its probe, which needs labels"
_PRETRAINED_ONLY = ("it is read through a pretrained model's own tokenizer; our encoder trains on mlm, csv:PATH or "
                    "jsonl:PATH")

#: Every task kind by key (the part of a spec before ``:``): the one list of valid task choices.
TASKS: Registry[TaskKind] = Registry("task")
TASKS.add("mlm", TaskKind(
    "mlm", "masked-language modelling on the Python standard library's source files (the default task; a "
    "pretrained base or classifier model is then scored on tweets)",
    {"preset": SCORE, "mlm": SCORE, "base": CALIB, "cls": CALIB}, {"base": _UNLABELLED, "cls": _UNLABELLED},
    build=_mlm, texts=lambda path, root: corpus_text_task(corpus_root=root)))
TASKS.add(BUILTIN_TASK, TaskKind(
    "tweets", "built-in tweet sentiment (3 classes; CrowdFlower's set, shipped in the package): the default of "
    "pretrained base and classifier models", {"base": SCORE, "cls": SCORE, "mlm": SCORE},
    {"preset": _PRETRAINED_ONLY},
    texts=_labelled_texts("tweets")))
TASKS.add("csv", TaskKind("csv:PATH", "text classification from a CSV file (--text-col, --label-col)",
                          {"preset": SCORE, "base": SCORE, "cls": SCORE, "mlm": SCORE},
                          build=_classification("csv"), texts=_labelled_texts("csv")))
TASKS.add("jsonl", TaskKind("jsonl:PATH", "text classification from a JSON-lines file (--text-col, --label-col)",
                            {"preset": SCORE, "base": SCORE, "cls": SCORE, "mlm": SCORE},
                            build=_classification("jsonl"), texts=_labelled_texts("jsonl")))
TASKS.add("text", TaskKind(
    "text:PATH", "your own plain-text corpus, one text a line (UTF-8), split 80/10/10 by text hash (masked-token "
    "accuracy of a masked LM)",
    {"mlm": SCORE, "base": CALIB, "cls": CALIB},
    {"base": _UNLABELLED, "cls": _UNLABELLED,
     "preset": "our encoder trains its own tokenizer on mlm, csv:PATH or jsonl:PATH; give text:PATH to a pretrained "
               "masked LM"},
    texts=lambda path, root: plain_text_task(str(path))))



def task_forms(model_kind: str | None = None, role: str = CALIB) -> tuple[str, ...]:
    """The spec forms of every task, or of those a ``model_kind`` model can use for ``role`` (:data:`CALIB`: any
    use; :data:`SCORE`: scoring it)."""
    return tuple(kind.form for _, kind in TASKS
                 if model_kind is None or kind.uses.get(model_kind) in ((SCORE,) if role == SCORE else (SCORE, CALIB)))


#: The forms our encoder trains on (``train``, ``eval`` and ``search`` name them in --help).
TASK_SPECS = task_forms("preset")


def parse_task(spec: str) -> tuple[TaskKind, str | None]:
    """The registered kind of ``spec`` and its path (None for a kind without one).

    Raises:
        ValueError: an unknown spec, or a kind given without (or with) its path; naming every valid form.
    """
    key, sep, path = spec.partition(":")
    kind = TASKS.get(key) if key in TASKS else None
    if kind is None or kind.takes_path != bool(sep and path):
        raise ValueError(f"unknown task {spec!r}; choose from: {', '.join(task_forms())}")
    return kind, (path if sep else None)


def scoring_task(spec: str, model_kind: str) -> str:
    """The task a ``model_kind`` model is scored on when the run names ``spec`` (``mlm`` means
    :data:`PRETRAINED_DEFAULT` for a pretrained base or classifier model)."""
    return PRETRAINED_DEFAULT if spec == "mlm" and TASKS.get("mlm").uses.get(model_kind) == CALIB else spec


def check_task_use(spec: str, model_kind: str, role: str) -> TaskKind:
    """Raise unless ``spec`` is a registered task a ``model_kind`` model can use for ``role``; returns its kind.

    Raises:
        ValueError: unknown spec (naming every form), or a kind of model this task cannot serve that way.
    """
    kind, _ = parse_task(spec)
    kind.use(model_kind, role)
    return kind


def task_texts(spec: str, corpus_root: Path | None = None) -> TextTask:
    """The text of ``spec`` for a pretrained encoder (its own tokenizer reads it).

    Raises:
        ValueError: unknown spec, or one our encoder alone reads; DataError: an unusable file.
    """
    kind, path = parse_task(spec)
    if kind.texts is None:
        raise ValueError(f"task {kind.form} has no text reader for pretrained models")
    return kind.texts(path, corpus_root)


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
    kind, path = parse_task(spec)
    if kind.build is None:
        kind.use("preset", SCORE)  # its one-line reason
        raise ValueError(f"task {kind.form} cannot train our encoder")
    options = {
        "vocab_size": vocab_size, "seq_len": seq_len, "cache_dir": cache_dir, "text_col": text_col,
        "label_col": label_col, "split_col": split_col, "max_files": max_files, "max_chars": max_chars,
        "corpus_root": corpus_root, "tokenizer": tok,
    }
    return kind.build(path, options)
