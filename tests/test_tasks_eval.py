"""Evaluation: determinism, fidelity to a reference, trivial baseline, calibration batches, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunebench.cli import eval_cmd, train_cmd
from prunebench.cli.main import main
from prunebench.models import IGNORE_INDEX, create_model
from prunebench.tasks import CACHE_ENV, EvalResult, calibration_batches, evaluate
from tests.tiny_mlm import SEQ, VOCAB, mlm_task, trained_mlm


@pytest.fixture(scope="module")
def task():
    return mlm_task()


@pytest.fixture(scope="module")
def trained(task):
    return trained_mlm(task)



def test_evaluate_is_deterministic(task, trained) -> None:
    a = evaluate(trained, task, max_batches=2, batch_size=8, seed=5)
    b = evaluate(trained, task, max_batches=2, batch_size=8, seed=5)
    assert a == b
    c = evaluate(trained, task, max_batches=2, batch_size=8, seed=6)
    assert c.n_predictions != a.n_predictions or c.accuracy != a.accuracy or c.loss != a.loss
    assert a.metric == "masked_token_accuracy" and a.n_batches == 2 and a.n_sequences == 16
    assert 0.0 <= a.accuracy <= 1.0 and a.loss > 0 and a.macro_f1 is None and a.agreement is None
    assert EvalResult.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    with pytest.raises(ValueError, match="unknown EvalResult keys"):
        EvalResult.from_dict({**a.to_dict(), "bogus": 1})


def test_trivial_baseline_is_the_most_frequent_token_rate(task, trained) -> None:
    result = evaluate(trained, task, max_batches=3, batch_size=8, seed=0)
    labels = torch.cat([b["labels"][b["labels"] != IGNORE_INDEX] for b in task.eval_batches(
        "test", batch_size=8, max_batches=3, seed=0)])
    assert result.n_predictions == labels.numel()
    # Masked tokens per sequence, in evaluation order: what the paired bootstrap resamples whole.
    per_row = [int(n) for b in task.eval_batches("test", batch_size=8, max_batches=3, seed=0)
               for n in (b["labels"] != IGNORE_INDEX).sum(dim=1)]
    assert result.cluster_sizes == per_row and len(per_row) == result.n_sequences
    assert result.trivial_accuracy == pytest.approx(float((labels == task.trivial_prediction()).float().mean()))


def test_fidelity_to_itself_and_to_an_unrelated_model(task, trained) -> None:
    same = evaluate(trained, task, reference=trained, max_batches=2, batch_size=8)
    assert same.agreement == 1.0 and same.kl_divergence == pytest.approx(0.0, abs=1e-9)
    assert same.hidden_cosine == pytest.approx(1.0)
    # An untrained model of the same shape is as unfaithful as a model can be.
    damaged = create_model("custom", seed=7, vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=2, d_ff=64,
                           max_positions=SEQ)
    worse = evaluate(damaged, task, reference=trained, max_batches=2, batch_size=8)
    assert worse.agreement < 0.5 and worse.kl_divergence > 0.1 and worse.hidden_cosine < 0.9
    assert trained.training is False and damaged.training is True  # each model keeps its own mode


def test_evaluate_rejects_mismatched_models(task, trained) -> None:
    other = create_model("custom", vocab_size=VOCAB, d_model=16, n_heads=2, n_layers=1, d_ff=16, max_positions=SEQ)
    with pytest.raises(ValueError, match="d_model"):
        evaluate(trained, task, reference=other)
    with pytest.raises(ValueError, match="choose from"):
        evaluate(trained, task, split="holdout")


def test_calibration_batches(task) -> None:
    batches = calibration_batches(task, 20, batch_size=8, seed=1)
    assert [b["input_ids"].shape[0] for b in batches] == [8, 8, 4]
    assert all(set(b) == {"input_ids", "attention_mask", "labels"} for b in batches)
    assert all(bool((b["labels"] != IGNORE_INDEX).any()) for b in batches)
    again = calibration_batches(task, 20, batch_size=8, seed=1)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(batches, again, strict=True))
    with pytest.raises(ValueError, match="positive"):
        calibration_batches(task, 0)
    # The sample is the start of the training stream's first (seeded) epoch: rows, masking and all.
    stream = task.train_stream(8, seed=1)
    for got, want in zip(batches[:2], (next(stream), next(stream)), strict=True):
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_cli_cache_dir_comes_from_flag_then_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert train_cmd.cache_dir_from_args(None) == tmp_path / "env"
    assert train_cmd.cache_dir_from_args(str(tmp_path / "flag")) == tmp_path / "flag"


def test_cli_train_then_eval_on_a_csv_task(tmp_path: Path, capsys) -> None:
    data = tmp_path / "d.csv"
    rows = ["text,label"] + [f"sample {i} {'good' if i % 2 else 'bad'} words,{i % 2}" for i in range(40)]
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "model"
    common = ["--task", f"csv:{data}", "--seq-len", "16", "--cache-dir", str(tmp_path / "cache")]
    code = main(["train", "--model", "small", *common, "--budget", "3", "--batch-size", "8", "--out", str(out)])
    assert code == 0 and (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()
    assert "trivial baseline" in capsys.readouterr().out
    # The saved model remembers its task, but a data file is read only when the user names it (issue #16).
    assert main(["eval", str(out), "--json", "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "pass --task csv:PATH" in capsys.readouterr().err
    assert main(["eval", str(out), "--task", f"csv:{data}", "--reference", str(out), "--json",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metric"] == "accuracy" and result["agreement"] == 1.0
    assert eval_cmd.register is not None


def test_cli_bad_data_file_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    data = tmp_path / "bad.csv"
    data.write_text("text,label\na,x\nb,x\nc,x\n")
    code = main(["train", "--task", f"csv:{data}", "--out", str(tmp_path / "m"), "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "only one class" in err
