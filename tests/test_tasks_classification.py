"""CSV / JSONL classification tasks: parsing, deterministic splits, one-line errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunebench.models import create_model
from prunebench.tasks import ClassificationTask, DataError, build_task, evaluate, train

VOCAB = 200



def _rows(n: int = 60) -> list[dict[str, str]]:
    words = {"pos": "great lovely superb fine happy", "neg": "awful bad terrible sad poor"}
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        rows.append({"text": f"item {i} was {words[label].split()[i % 5]} indeed", "label": label})
    return rows


def _csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = ("text", "label")) -> Path:
    lines = [",".join(columns)] + [",".join(r[c] for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_task_splits_and_labels(tmp_path: Path) -> None:
    path = _csv(tmp_path / "reviews.csv", _rows())
    task = build_task(f"csv:{path}", vocab_size=VOCAB, seq_len=16, cache_dir=tmp_path / "cache")
    assert isinstance(task, ClassificationTask)
    assert task.label_names == ["neg", "pos"] and task.num_labels == 2
    sizes = {s: task.num_sequences(s) for s in ("train", "val", "test")}
    assert sizes == {"train": 48, "val": 6, "test": 6}
    assert task.model_overrides() == {"vocab_size": VOCAB, "head": "cls", "num_labels": 2}
    # Tokenizer training is not bit-reproducible; the cached (or a given) tokenizer makes ids identical.
    again = build_task(f"csv:{path}", vocab_size=VOCAB, seq_len=16, cache_dir=tmp_path / "cache")
    assert torch.equal(task.split("test").input_ids, again.split("test").input_ids)
    given = build_task(f"csv:{path}", vocab_size=VOCAB, seq_len=16, tokenizer=task.tokenizer)
    assert torch.equal(task.split("train").input_ids, given.split("train").input_ids)
    # Row order does not change which rows are test rows (split by text hash).
    shuffled = _csv(tmp_path / "shuffled.csv", list(reversed(_rows())))
    other = build_task(f"csv:{shuffled}", vocab_size=VOCAB, seq_len=16)
    assert sorted(other.split("test").labels.tolist()) == sorted(task.split("test").labels.tolist())
    assert task.fingerprint()["file_sha256"] != other.fingerprint()["file_sha256"]


def test_jsonl_task_with_custom_columns_and_split_column(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    rows = [{"sentence": r["text"], "y": 1 if r["label"] == "pos" else 0,
             "part": ["train", "train", "train", "dev", "test"][i % 5]} for i, r in enumerate(_rows(50))]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    task = build_task(f"jsonl:{path}", vocab_size=VOCAB, seq_len=16, text_col="sentence", label_col="y",
                      split_col="part")
    assert task.label_names == ["0", "1"]
    assert (task.num_sequences("train"), task.num_sequences("val"), task.num_sequences("test")) == (30, 10, 10)


def test_classification_trains_and_evaluates(tmp_path: Path) -> None:
    task = build_task(f"csv:{_csv(tmp_path / 'r.csv', _rows(80))}", vocab_size=VOCAB, seq_len=16)
    model = create_model("custom", vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=1, d_ff=32,
                         max_positions=16, **{k: v for k, v in task.model_overrides().items() if k != "vocab_size"})
    history = train(model, task, 30, lr=3e-3, batch_size=16, n_evals=1, eval_batches=1)
    assert history.steps == 30 and len(history.evals) == 1
    result = evaluate(model, task, split="test")
    assert result.metric == "accuracy" and 0.0 <= result.macro_f1 <= 1.0
    assert result.n_predictions == task.num_sequences("test")
    assert 0.0 < result.trivial_accuracy < 1.0


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("content", "kwargs", "expected"),
    [
        ("sentence,label\na,x\nb,y\nc,x\n", {}, "no column 'text'; its columns are: 'sentence', 'label'"),
        ("text,category\na,x\nb,y\nc,x\n", {}, "no column 'label'"),
        ("", {}, "empty"),
        ("text,label\n", {}, "no data rows"),
        ("text,label\na,x\nb,x\nc,x\n", {}, "only one class ('x')"),
        ("text,label\na,x\n,y\nc,x\n", {}, "row 2 has no value in column 'text'"),
        ("text,label,part\na,x,train\nb,y,holdout\nc,x,test\n", {"split_col": "part"}, "split 'holdout'"),
        ("text,label,part\na,x,train\nb,y,train\nc,x,test\n", {"split_col": "part"}, "'val' split is empty"),
    ],
)
def test_bad_csv_files_fail_in_one_line(tmp_path: Path, content: str, kwargs: dict, expected: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as exc:
        build_task(f"csv:{path}", vocab_size=VOCAB, **kwargs)
    assert expected in _one_line(exc)


def test_unreadable_encoding_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\u00e9,x\nna\u00efve,y\nb,x\n".encode("latin-1"))
    with pytest.raises(DataError) as exc:
        build_task(f"csv:{path}", vocab_size=VOCAB)
    assert "not UTF-8" in _one_line(exc) and "0xe9" in str(exc.value)


def test_missing_file_and_bad_jsonl(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data file"):
        build_task(f"csv:{tmp_path / 'nope.csv'}", vocab_size=VOCAB)
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{not json}\n')
    with pytest.raises(DataError) as exc:
        build_task(f"jsonl:{path}", vocab_size=VOCAB)
    assert "line 2 is not valid JSON" in _one_line(exc)
    path.write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match="line 2 is not a JSON object"):
        build_task(f"jsonl:{path}", vocab_size=VOCAB)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no data rows"):
        build_task(f"jsonl:{empty}", vocab_size=VOCAB)
