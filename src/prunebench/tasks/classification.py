"""Sequence classification from a user's CSV or JSONL file (text and label columns, names configurable).

Without a split column the rows are split 80/10/10 by a hash of their text, so identical texts always land
in the same split (no train/test leakage through duplicates) and the split never depends on row order.
Every way a file can be unusable ends in a one-line :class:`DataError` naming the file and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from prunebench.models.batch import Batch
from prunebench.models.config import TaskHead
from prunebench.tasks.base import SPLIT_NAMES, DataError, SplitData, Task, cache_entry_lock, stable_hash
from prunebench.tasks.tokenizer import (
    PAD_ID,
    TOKENIZER_FILE,
    check_tokenizer,
    load_tokenizer,
    recipe,
    tokenizer_hash,
    train_tokenizer,
)

logger = logging.getLogger(__name__)

#: Accepted values of a split column (case-insensitive) and the split each means.
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}


class ClassificationTask(Task):
    """Predict a label from a text; metric accuracy (and macro-F1)."""

    def __init__(self, name: str, tokenizer: Tokenizer, splits: dict[str, SplitData], vocab_size: int, seq_len: int,
                 label_names: list[str], info: dict[str, Any]) -> None:
        self.name = name
        self.head = TaskHead.CLS
        self.tokenizer = tokenizer
        self.splits = splits
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.label_names = label_names
        self.num_labels = len(label_names)
        self._info = info
        labels = splits["train"].labels
        if labels is None:
            raise ValueError("a classification task needs labels in every split")
        self._majority = int(torch.bincount(labels, minlength=self.num_labels).argmax().item())

    def fingerprint(self) -> dict[str, Any]:
        """File hash, columns, labels, tokenizer recipe + hash, rows per split."""
        return dict(self._info)

    def trivial_prediction(self) -> int:
        """Majority class of the training split."""
        return self._majority

    def _label(self, rows: SplitData, index: torch.Tensor, generator: torch.Generator, evaluation: bool) -> Batch:
        if rows.labels is None:
            raise ValueError("a classification split has no labels")
        return {"input_ids": rows.input_ids[index], "attention_mask": rows.attention_mask[index],
                "labels": rows.labels[index]}


def _file_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def _decode(path: Path, raw: bytes, encoding: str = "utf-8-sig") -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} at offset {exc.start}); re-save it as UTF-8"
        ) from None


def _read_rows(path: Path, raw: bytes, kind: str, encoding: str = "utf-8-sig") -> list[dict[str, Any]]:
    text = _decode(path, raw, encoding)
    if kind == "csv":
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            rows = list(reader)
            columns = list(reader.fieldnames or [])
        except csv.Error as exc:
            raise DataError(f"{path} is not valid CSV: {exc}") from None
        if not columns:
            raise DataError(f"{path} is empty: expected a header row and data rows")
        return [{"__columns__": columns}, *rows]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number} is not a JSON object")
        rows.append(row)
    columns = sorted({k for r in rows for k in r})
    return [{"__columns__": columns}, *rows]


def _cell(path: Path, row: dict[str, Any], col: str, number: int) -> str:
    value = row.get(col)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{path} row {number} has no value in column {col!r}")
    if isinstance(value, (dict, list)):
        raise DataError(f"{path} row {number}: column {col!r} holds a {type(value).__name__}, expected text")
    return str(value)


def _sort_labels(values: set[str]) -> list[str]:
    try:
        return sorted(values, key=lambda v: (0, float(v), v))
    except ValueError:
        return sorted(values)


def hash_split(texts: list[str]) -> list[str]:
    """80/10/10 by rank of each text's hash: deterministic, order-free, and every split non-empty."""
    keyed = sorted(range(len(texts)), key=lambda i: (hashlib.sha256(texts[i].encode("utf-8")).digest(), i))
    n_test = max(1, round(0.1 * len(texts)))
    n_val = max(1, round(0.1 * len(texts)))
    out = ["train"] * len(texts)
    for rank, i in enumerate(keyed):
        if rank < n_test:
            out[i] = "test"
        elif rank < n_test + n_val:
            out[i] = "val"
    return out


def _tokenizer(
    given: Tokenizer | None, texts: list[str], vocab_size: int, cache_dir: str | Path | None, ident: list[Any]
) -> Tokenizer:
    """The given tokenizer, else the cached one for this file and settings, else a freshly trained one."""
    if given is not None:
        check_tokenizer(given, vocab_size)
        return Tokenizer.from_str(given.to_str())  # a copy: padding/truncation are set on it below
    if cache_dir is None:
        return train_tokenizer(texts, vocab_size)
    path = Path(cache_dir) / "tasks" / f"cls-{stable_hash([*ident, recipe(vocab_size)])}" / TOKENIZER_FILE
    with cache_entry_lock(path.parent):  # a concurrent run waits, then reuses this tokenizer
        if path.is_file():
            try:
                return load_tokenizer(path, vocab_size)
            except ValueError as exc:
                logger.warning("cached tokenizer %s is unusable (%s); retraining", path, exc)
        tok = train_tokenizer(texts, vocab_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tok.save(str(tmp))
        tmp.replace(path)
        return tok


@dataclass(frozen=True)
class LabelledTexts:
    """A labelled text file read and split, before any tokenizer sees it.

    Attributes:
        texts, labels: per split name, the texts and their class ids (index into ``label_names``).
        label_names: the classes, sorted (numerically where they are numbers).
        raw_counts: rows per raw label value in the whole file.
        file_sha256: hash of the file's bytes (part of every fingerprint built on it).
    """

    texts: dict[str, list[str]]
    labels: dict[str, list[int]]
    label_names: list[str]
    raw_counts: dict[str, int]
    file_sha256: str


def shown_columns(columns: list[Any], most: int = 8, width: int = 24) -> str:
    """The column names of a file for a message: at most ``most``, each cut to ``width`` characters, repr'd.

    A file that is no table has its whole first line as one "column" (``--task csv:/etc/shadow`` printed a
    password hash): a message names what was found without ever echoing whole lines of an arbitrary file.
    """
    def cut(name: Any) -> str:
        text = str(name)
        return repr(text if len(text) <= width else text[: width - 3] + "...")

    shown = ", ".join(cut(c) for c in columns[:most])
    return shown + (f" and {len(columns) - most} more" if len(columns) > most else "") if columns else "none"


def read_labelled_texts(
    path: Path,
    kind: str,
    *,
    text_col: str = "text",
    label_col: str = "label",
    split_col: str | None = None,
    encoding: str = "utf-8-sig",
    raw: bytes | None = None,
) -> LabelledTexts:
    """Read ``path`` (``kind`` ``"csv"`` or ``"jsonl"``) and split it (the split column, else by text hash).

    Shared by this module's own-tokenizer task and the Hugging Face tasks, so a user's file is read,
    validated and split identically whichever model is evaluated on it. ``raw``: the file's bytes when the
    caller has read them already (the built-in task's CSV, unpacked from the gzip copy in the package);
    ``path`` then only names the file in messages, and the hash is of these bytes.

    Raises:
        DataError: unreadable, undecodable, empty, missing columns, a row without text/label, one class
            only, an unknown split value, or an empty split.
    """
    if raw is None:
        if not path.is_file():
            raise DataError(f"no data file at {path}")
        raw = _file_bytes(path)
    header, *rows = _read_rows(path, raw, kind, encoding)
    if not rows:
        raise DataError(f"{path} is empty: it has no data rows")
    columns = header["__columns__"]
    for col in (text_col, label_col, *([split_col] if split_col else [])):
        if col not in columns:
            raise DataError(f"{path} has no column {col!r}; its columns are: {shown_columns(columns)}")
    texts = [_cell(path, r, text_col, i) for i, r in enumerate(rows, start=1)]
    raw_labels = [_cell(path, r, label_col, i) for i, r in enumerate(rows, start=1)]
    label_names = _sort_labels(set(raw_labels))
    if len(label_names) < 2:
        raise DataError(
            f"{path} has only one class ({label_names[0]!r}) in column {label_col!r}; classification needs at least 2"
        )
    if split_col:
        splits_of = []
        for i, r in enumerate(rows, start=1):
            value = _cell(path, r, split_col, i).strip().lower()
            if value not in SPLIT_ALIASES:
                raise DataError(f"{path} row {i}: split {value!r} is not one of {', '.join(SPLIT_ALIASES)}")
            splits_of.append(SPLIT_ALIASES[value])
    else:
        if len(rows) < 3:
            raise DataError(f"{path} has {len(rows)} rows; at least 3 are needed to split train/val/test")
        splits_of = hash_split(texts)
    label_ids = {name: i for i, name in enumerate(label_names)}
    by_split = {s: [i for i, sp in enumerate(splits_of) if sp == s] for s in SPLIT_NAMES}
    for s in SPLIT_NAMES:
        if not by_split[s]:
            raise DataError(f"{path}: the {s!r} split is empty; add rows with {split_col}={s}")
    return LabelledTexts(
        texts={s: [texts[i] for i in by_split[s]] for s in SPLIT_NAMES},
        labels={s: [label_ids[raw_labels[i]] for i in by_split[s]] for s in SPLIT_NAMES},
        label_names=label_names,
        raw_counts=dict(Counter(raw_labels)),
        file_sha256=hashlib.sha256(raw).hexdigest(),
    )


def build_classification_task(
    path: Path,
    kind: str,
    *,
    vocab_size: int,
    seq_len: int = 128,
    cache_dir: str | Path | None = None,
    text_col: str = "text",
    label_col: str = "label",
    split_col: str | None = None,
    tokenizer: Tokenizer | None = None,
) -> ClassificationTask:
    """Read ``path`` (``kind`` ``"csv"`` or ``"jsonl"``), train a tokenizer on its train texts, tokenize.

    The trained tokenizer is cached in ``cache_dir`` (keyed by the file's hash and the settings), because
    tokenizer training is not bit-reproducible and cached baselines must see the same token ids. User
    files are small, so the tokenization itself is simply redone. ``tokenizer`` skips training altogether.

    Raises:
        DataError: see :func:`read_labelled_texts`.
    """
    data = read_labelled_texts(path, kind, text_col=text_col, label_col=label_col, split_col=split_col)
    file_sha = data.file_sha256
    tok = _tokenizer(tokenizer, data.texts["train"], vocab_size, cache_dir, [file_sha, text_col, label_col, split_col])
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(pad_id=PAD_ID, length=seq_len)
    splits = {}
    for s in SPLIT_NAMES:
        encoded = tok.encode_batch(data.texts[s])
        splits[s] = SplitData(
            torch.tensor([e.ids for e in encoded], dtype=torch.long),  # [N, S]
            torch.tensor([e.attention_mask for e in encoded], dtype=torch.long),  # [N, S]
            torch.tensor(data.labels[s], dtype=torch.long),  # [N]
        )
    tok.no_padding()
    info = {
        "task": "cls",
        "file": path.name,
        "format": kind,
        "file_sha256": file_sha,
        "columns": {"text": text_col, "label": label_col, "split": split_col},
        "labels": data.label_names,
        "label_counts": data.raw_counts,
        "seq_len": seq_len,
        "tokenizer": recipe(vocab_size),
        "tokenizer_sha": tokenizer_hash(tok),
        "sequences": {s: len(splits[s]) for s in SPLIT_NAMES},
    }
    return ClassificationTask(f"cls:{path.stem}", tok, splits, vocab_size, seq_len, data.label_names, info)
