"""The one task registry: ``text:PATH`` (a user's plain-text corpus), ``--calib-task`` mixes, the second-domain
fidelity of sentence encoders, and every bad task input refused in one line before any folder exists."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from prunebench.cli.main import main
from prunebench.config import RunConfig
from prunebench.report.notes import fidelity_lines
from prunebench.runner.budgets import Budgets
from prunebench.sources import OTHER_DOMAIN_TEXTS, HFSource
from prunebench.tasks import mixed_stream
from prunebench.tasks.classification import hash_split
from prunebench.tasks.factory import TASKS
from prunebench.tasks.hf_text import PROSE_SOURCE
from tests import hf_text_fixtures as fx


def _mlm_folder(tmp: Path) -> Path:
    folder = tmp / "tiny-mlm"
    fx.mlm_model(fx.tokenizer(folder)).save_pretrained(str(folder))
    return folder


def _lines(path: Path, words: str, n: int) -> Path:
    path.write_text("".join(f"{words} {i}\n" for i in range(n)), encoding="utf-8")
    return path


@pytest.fixture
def texts(tmp_path: Path) -> tuple[Path, Path]:
    """Two corpora told apart by their words: film reviews and code words."""
    return (_lines(tmp_path / "reviews.txt", "the good movie day", 200),
            _lines(tmp_path / "code.txt", "def return class import", 200))


def _source(model: Path, tmp: Path, **config) -> tuple[HFSource, torch.nn.Module]:
    cfg = RunConfig(model=str(model), seq_len=16, **config)
    source = HFSource(cfg, Budgets.of(cfg), cache_dir=tmp / "cache")
    dense, _ = source.load_dense(lambda *a, **k: None)
    return source, dense


def _damaged(dense: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``dense`` whose attention outputs are negated: a model that no longer computes what dense did."""
    model = copy.deepcopy(dense)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("attention.output.dense"):
                module.weight.mul_(-1.0)
    return model.eval()


def test_every_task_kind_is_listed_once_with_the_models_it_applies_to() -> None:
    forms = [kind.form for _, kind in TASKS]
    assert forms == ["mlm", "tweets", "csv:PATH", "jsonl:PATH", "text:PATH"]
    assert TASKS.get("text").uses == {"mlm": "score", "base": "calib", "cls": "calib"}
    assert main(["list", "tasks"]) == 0


def test_text_path_scores_a_masked_lm_on_the_users_own_text(tmp_path: Path, texts) -> None:
    reviews, _ = texts
    source, dense = _source(_mlm_folder(tmp_path), tmp_path, task=f"text:{reviews}")
    lines = reviews.read_text().splitlines()
    assert source.corpus.texts["test"] == [t for t, s in zip(lines, hash_split(lines), strict=True) if s == "test"]
    same = source.evaluate(dense, dense)
    assert same.task == "text:reviews.txt" and same.metric == "masked_token_accuracy" and same.n_sequences > 0
    assert same.extra["deltas"]["masked_token_accuracy"]["delta"] == 0
    other = source.evaluate(_damaged(dense), dense)
    assert other.task == "text:reviews.txt" and other.hidden_cosine < 0.999


def test_a_masked_lm_given_a_labelled_file_is_labelled_as_the_files_text(tmp_path: Path) -> None:
    csv = fx.sentiment_csv(tmp_path / "reviews.csv", n=200)
    source, dense = _source(_mlm_folder(tmp_path), tmp_path, task=f"csv:{csv}")
    result = source.evaluate(dense, dense)
    # masked-token accuracy on the file's own texts, and the record says so (not "cls:reviews", not the stdlib's)
    assert result.task == "cls:reviews text" and result.metric == "masked_token_accuracy"
    assert source.fingerprint()["corpus"]["task"] == "cls:reviews text"


def test_calibration_and_distillation_draw_equal_shares_of_every_calib_task(tmp_path: Path, texts) -> None:
    reviews, code = texts
    folder = _mlm_folder(tmp_path)
    source, dense = _source(folder, tmp_path, task=f"text:{reviews}", calib_tasks=(f"text:{reviews},text:{code}",))
    good, def_ = source.tokenizer.convert_tokens_to_ids(["good", "def"])

    def origin(batch: dict) -> set[str]:
        seen = torch.where(batch["labels"] >= 0, batch["labels"], batch["input_ids"])  # masked tokens put back
        return {name for name, tok in (("reviews", good), ("code", def_)) if bool((seen == tok).any())}

    batches = source.calibration(16, seed=0, batch_size=4)
    assert [origin(b) for b in batches] == [{"reviews"}, {"code"}] * 2  # 8 + 8 sequences, in turns
    assert sum(int(b["input_ids"].shape[0]) for b in batches) == 16
    assert source.calibration(16, seed=0, batch_size=4)[1]["input_ids"].equal(batches[1]["input_ids"])  # seeded
    stream = mixed_stream(source.calib_sources, 4, seed=0)
    assert [origin(next(stream)) for _ in range(4)] == [{"reviews"}, {"code"}] * 2
    assert source.evaluate(dense, dense).extra["calibrated_on"] == [f"text:{reviews}", f"text:{code}"]


def test_another_tasks_labels_never_reach_a_base_encoders_calibration(tmp_path: Path, texts) -> None:
    _, code = texts
    csv = fx.sentiment_csv(tmp_path / "reviews.csv", n=200)
    source, _ = _source(fx.base_model_folder(tmp_path), tmp_path, task=f"csv:{csv}",
                        calib_tasks=(f"csv:{csv}", f"text:{code}"))
    first, second = source.calibration(8, seed=0, batch_size=4)
    assert "labels" in first and "labels" not in second


def test_second_domain_fidelity_is_stored_per_variant_and_printed(tmp_path: Path) -> None:
    csv = fx.sentiment_csv(tmp_path / "reviews.csv", n=200)
    source, dense = _source(fx.st_folder(tmp_path), tmp_path, task=f"csv:{csv}")
    same = source.evaluate(dense, dense).extra["fidelity_other_domain"]
    assert same["on"] == PROSE_SOURCE and same["n"] == OTHER_DOMAIN_TEXTS and same["cosine"] == pytest.approx(1.0)
    worse = source.evaluate(_damaged(dense), dense)
    other = worse.extra["fidelity_other_domain"]
    assert other["cosine"] < 0.999
    snapshot = {"evaluations": [source.evaluate(dense, dense).record("dense"), worse.record("structured@0.5")]}
    printed = "\n".join(fidelity_lines(snapshot))
    assert f"structured@0.5 {worse.hidden_cosine:.3f} / {other['cosine']:.3f}" in printed
    assert "pydoc_data.topics" in printed and f"calibrated on: csv:{csv}" in printed


def test_prune_prints_fidelity_on_another_domain_and_warns_under_0_8(tmp_path: Path, capsys, monkeypatch) -> None:
    csv = fx.sentiment_csv(tmp_path / "reviews.csv", n=200)
    folder = fx.st_folder(tmp_path)
    args = ["prune", "--model", str(folder), "--method", "structured", "--sparsity", "0.5", "--task", f"csv:{csv}",
            "--calib-sequences", "8"]
    code = _lines(tmp_path / "code.txt", "def return class import", 200)
    assert main([*args, "--calib-task", f"csv:{csv},text:{code}", "--out", str(tmp_path / "p1")]) == 0
    out = capsys.readouterr().out
    assert "fidelity to dense (another domain)" in out and "pydoc_data.topics" in out
    assert "(equal shares)" in out
    stored = "".join(f.read_text(errors="ignore") for f in (tmp_path / "p1").glob("*.json"))
    assert '"calibrated_on"' in stored and "code.txt" in stored and "other_domain" in stored
    monkeypatch.setattr(HFSource, "other_domain_fidelity", lambda self, model, dense: {
        "cosine": 0.4, "on": PROSE_SOURCE, "n": OTHER_DOMAIN_TEXTS})
    assert main([*args, "--out", str(tmp_path / "p2")]) == 0
    err = capsys.readouterr().err
    assert "cosine 0.40 to dense on text of another domain (below 0.8)" in err


# -- bad task input: one line, exit 2, nothing created --------------------------------------------------------------


def _bad_text(tmp: Path, case: str) -> Path:
    path = tmp / f"{case}.txt"
    if case == "missing":
        return path
    data = {"empty": b"", "binary": b"a text\x00 with a NUL\n" * 50,
            "latin1": "caf\xe9 au lait\n".encode("latin-1") * 50, "tiny": b"one text\n" * 5,
            "small": b"".join(b"text number %d\n" % i for i in range(30))}[case]
    path.write_bytes(data)
    return path


BAD_TEXT = [("missing", "does not exist"), ("empty", "is empty"), ("binary", "is binary"),
            ("latin1", "is not UTF-8 text"), ("tiny", "holds 5 texts"), ("small", "too small to calibrate")]


def _refused(capsys, argv: list[str], message: str, *never: Path) -> None:
    capsys.readouterr()  # what the fixtures printed (transformers' save progress)
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err and message in err, err
    for path in never:
        assert not path.exists()


def _commands(model: Path, tmp: Path) -> dict[str, list[str]]:
    return {"run": ["run", "--model", str(model), "--quick", "--seq-len", "16", "--cache-dir", str(tmp / "cache")],
            "prune": ["prune", "--model", str(model), "--method", "wanda", "--sparsity", "0.5"]}


@pytest.mark.parametrize("command", ["run", "prune"])
def test_bad_task_input_is_one_line_before_any_folder(tmp_path: Path, capsys, command: str) -> None:
    mlm = _mlm_folder(tmp_path)
    base = fx.base_model_folder(tmp_path)
    out, cache = tmp_path / "never", tmp_path / "cache"
    good = _lines(tmp_path / "good.txt", "the good movie day", 400)
    for case, message in BAD_TEXT:
        path = _bad_text(tmp_path, case)
        _refused(capsys, [*_commands(mlm, tmp_path)[command], "--task", f"text:{path}", "--out", str(out)],
                 message, out, cache)
        # the same file as calibration text of a sentence encoder
        _refused(capsys, [*_commands(base, tmp_path)[command], "--calib-task", f"text:{path}", "--out", str(out)],
                 message, out, cache)
    cases = [(mlm, ["--task", "tsv:x"], "unknown task 'tsv:x'; choose from: mlm, tweets, csv:PATH, jsonl:PATH, "
                                        "text:PATH"),
             (mlm, ["--calib-task", f"text:{good},parquet:x"], "--calib-task: unknown task 'parquet:x'"),
             (base, ["--task", f"text:{good}"], "use it with --calib-task")]
    for model, extra, message in cases:
        _refused(capsys, [*_commands(model, tmp_path)[command], *extra, "--out", str(out)], message, out, cache)


def test_a_task_read_by_the_caller_scores_a_masked_lm_on_its_own_text_as_a_named_one_does() -> None:
    """``prunebench search`` reads a user file with its own column names and hands it to the source: a masked LM
    is then scored on that file's text (labelled as such), never on the stdlib corpus, as with ``--task``."""
    from prunebench.sources import hf_texts
    from prunebench.tasks.hf_text import TextTask

    given = TextTask("cls:reviews", {s: [f"{s} text {i}" for i in range(3)] for s in ("train", "val", "test")},
                     {s: [0, 1, 0] for s in ("train", "val", "test")}, ["neg", "pos"])
    labelled, text = hf_texts("csv:reviews.csv", "mlm", texts=given)
    assert labelled is None and text.labels is None and text.name == "cls:reviews text"
    assert text.texts["test"] == given.texts["test"]
    labelled, text = hf_texts("csv:reviews.csv", "base", texts=given)
    assert labelled is given and text is None
