"""`prunebench search` and `prunebench eval` go through the model source `prunebench run` uses (sources.py), for
a tiny random HF BERT folder and our own encoder: the evaluator, search calibration, refit and recovery; and the
options a command cannot honour are refused in one line, exit 2, before any folder exists."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from prunebench.cli.main import main
from prunebench.config import RunConfig
from prunebench.models.hf import load_hf_model
from prunebench.runner.budgets import Budgets
from prunebench.search import SearchOptions, search_family
from prunebench.sources import SEARCH_CALIB_BATCH, HFSource, ModelSource, PresetSource
from prunebench.tasks.evaluation import EvalResult
from tests import hf_text_fixtures as fx
from tests.test_search_hf import FAST, _synthetic_table


@pytest.fixture
def hf_folder(tmp_path: Path) -> Path:
    return fx.base_model_folder(tmp_path)


def _spy(monkeypatch, cls: type, name: str) -> list:
    """Record every call of ``cls.name`` (its arguments and result), still calling it."""
    calls: list = []
    real = getattr(cls, name)

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls.append((args, out))
        return out

    monkeypatch.setattr(cls, name, spy)
    return calls


def test_eval_of_an_hf_folder_is_the_sources_record_with_zero_deltas_against_itself(hf_folder, tmp_path, capsys,
                                                                                    monkeypatch):
    csv = fx.sentiment_csv(tmp_path / "reviews.csv", n=120)
    built = _spy(monkeypatch, HFSource, "evaluator")
    assert main(["eval", str(hf_folder), "--task", f"csv:{csv}", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert built, "eval did not go through the model source"
    # The one evaluation record, with the keys the run stores (EvalResult.to_dict), and the HF metrics.
    dense = load_hf_model(hf_folder).eval()
    source = HFSource.of_model(hf_folder, dense, cache_dir=tmp_path / "c", task=f"csv:{csv}")
    expected = source.evaluate(dense, dense).to_dict()
    assert set(doc) == set(expected) == set(EvalResult.from_dict(expected).to_dict())
    assert doc["accuracy"] == expected["accuracy"] and doc["n_predictions"] == expected["n_predictions"]
    deltas = doc["extra"]["deltas"]
    assert set(deltas) == {"probe_accuracy", "probe_macro_f1"}
    assert all((d["delta"], d["low"], d["high"], d["measurable"]) == (0.0, 0.0, 0.0, False) for d in deltas.values())
    assert doc["hidden_cosine"] == pytest.approx(1.0) and doc["agreement"] is None


def test_search_of_an_hf_folder_uses_the_source_and_recovers_by_distillation(hf_folder, tmp_path, monkeypatch):
    from prunebench.cli import search_cmd
    from prunebench.search import family

    monkeypatch.setattr(family, "measure_latency_table", _synthetic_table)
    monkeypatch.setattr(search_cmd, "SearchOptions", partial(SearchOptions, table_timing=FAST, verify_timing=FAST,
                                                             config_timing=FAST))
    calib = _spy(monkeypatch, ModelSource, "search_calibration")
    recovered = _spy(monkeypatch, HFSource, "recover")
    csv = fx.sentiment_csv(tmp_path / "reviews.csv", n=200)
    out = tmp_path / "out"
    code = main(["search", "--model", str(hf_folder), "--targets", "1.3", "--task", f"csv:{csv}", "--seq-len", "16",
                 "--check-configs", "0", "--calib-sequences", "32", "--recovery-seconds", "0.3", "--threads", "1",
                 "--out", str(out), "--allow-busy"])
    assert code in (0, 1)  # 1: the target was not met on this noisy timing of a tiny model
    # Search calibration comes from the source, in batches of 8 (Fisher wants many small ones).
    (args, batches), = calib
    assert args[0] == 32 and all(b["input_ids"].shape[0] <= SEARCH_CALIB_BATCH for b in batches)
    assert sum(b["input_ids"].shape[0] for b in batches) == 32
    entry = json.loads((out / "search.json").read_text())["targets"][0]
    assert len(recovered) == 2  # the searched and the uniform model, alike
    for member in (entry, entry["uniform"]):
        assert member["recovery"]["kind"] == "distillation" and member["recovery"]["steps"] >= 1
        assert member["accuracy_before_recovery"]["metric"] == "probe_accuracy"
        assert member["accuracy"]["metric"] == "probe_accuracy"


def test_search_of_our_encoder_recovers_by_fine_tuning_through_its_source(tmp_path):
    from prunebench.models import create_model
    from tests.test_search import _table
    from tests.tiny_mlm import VOCAB, mlm_task

    task = mlm_task()
    dense = create_model("custom", vocab_size=VOCAB, d_model=16, n_heads=4, n_layers=2, d_ff=32,
                         max_positions=32).eval()
    config = RunConfig(model="small", recovery_seconds=0.3, eval_batches=1, seq_len=8)
    source = PresetSource(config, Budgets.of(config), cache_dir=tmp_path, task=task)
    options = SearchOptions(targets=(1.05,), seq_len=8, check_configs=0, table_timing=FAST, verify_timing=FAST,
                            config_timing=FAST, compare_uniform=False, allow_busy=True)
    entry = search_family(dense, source.search_calibration(16, 0), options, table=_table(),
                          evaluate=lambda m, d: source.evaluate(m, d).to_dict(),
                          recover=lambda m: source.recover(m, dense)).report["targets"][0]
    assert entry["recovery"]["kind"] == "fine-tuning" and entry["recovery"]["steps"] >= 1
    assert entry["accuracy_before_recovery"]["metric"] == entry["accuracy"]["metric"]
    # Without recovery seconds nothing is recovered (and nothing recorded).
    none = PresetSource(RunConfig(model="small", recovery_seconds=0.0), Budgets.of(config), cache_dir=tmp_path,
                        task=task)
    assert none.recover(dense, dense) is None


def _refused(capsys, argv: list[str], out: Path, needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_options_a_command_cannot_honour_are_one_line_exit_2_before_any_folder(hf_folder, tmp_path, capsys):
    out = tmp_path / "o"
    # --refit asked explicitly where nothing is removed physically.
    _refused(capsys, ["prune", "--model", str(hf_folder), "--method", "wanda", "--sparsity", "0.5", "--refit",
                      "--out", str(out)], out, "--method wanda removes none")
    _refused(capsys, ["prune", "--model", str(hf_folder), "--method", "nm", "--recovery-seconds", "2",
                      "--out", str(out)], out, "--recovery-seconds recovers a model that lost")
    _refused(capsys, ["run", "--model", "small", "--methods", "magnitude,wanda", "--refit", "--out", str(out)], out,
             "none of the methods (magnitude, wanda) removes any")
    # Preset-only options given with a pretrained folder.
    run = ["run", "--model", str(hf_folder), "--seq-len", "32", "--out", str(out)]
    _refused(capsys, [*run, "--train-budget", "20"], out, "--train-budget does not apply to a pretrained Hugging Face")
    _refused(capsys, [*run, "--set", "finetune_steps=5"], out, "--set finetune_steps does not apply")
    _refused(capsys, ["search", "--model", str(hf_folder), "--targets", "1.5", "--eval-batches", "4",
                      "--out", str(out)], out, "--eval-batches does not apply")
    _refused(capsys, ["eval", str(hf_folder), "--split", "val"], out, "--split does not apply")
    # What a run honours for every kind is taken, not refused (the check itself, without running).
    from prunebench.runner.validate import check_explicit_options

    check_explicit_options(RunConfig(model=str(hf_folder), seq_len=32, methods=("wanda",), targets=(1.5,)),
                           {"refit": "--refit", "recovery_seconds": "--recovery-seconds"})
    check_explicit_options(RunConfig(model="small", methods=("structured",)), {"refit": "--refit"})


def test_the_model_sources_import_first_without_a_cycle() -> None:
    """Benchmarks and users import ``prunebench.sources`` before anything else of the runner; that import once
    failed with a circular import (sources -> runner package -> pipeline -> sources)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import prunebench.sources"], capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_backends_are_checked_on_held_out_task_text_of_each_source(hf_folder, tmp_path):
    """``check_text``: CHECK_TEXTS rows of the scoring task's validation split, padded as real text is, the same
    rows for one seed, none of them a row the backend's calibration (train split) drew."""
    from prunebench.sources import CHECK_TEXTS
    from tests.tiny_mlm import mlm_task

    csv = fx.sentiment_csv(tmp_path / "reviews.csv", n=200)
    dense = load_hf_model(hf_folder).eval()
    source = HFSource.of_model(hf_folder, dense, cache_dir=tmp_path / "c", task=f"csv:{csv}")
    text = source.check_text(0)
    ids, mask = text["input_ids"], text["attention_mask"]
    assert ids.shape[0] == CHECK_TEXTS and bool((mask == 0).any())  # lengths vary: padded like real batches
    assert torch.equal(ids, source.check_text(0)["input_ids"])
    assert not torch.equal(ids, source.check_text(1)["input_ids"])
    from prunebench.tasks.hf_text import encode_texts

    val = {tuple(r) for r in encode_texts(source.tokenizer, source.texts.texts["val"], source.max_length)}
    rows = {tuple(r[m.bool()].tolist()) for r, m in zip(ids, mask, strict=True)}
    train = {tuple(r[m.bool()].tolist()) for b in source.calibration(64, 0) for r, m in
             zip(b["input_ids"], b["attention_mask"], strict=True)}
    assert rows <= val and not rows & train
    config = RunConfig(model="small", seq_len=8)
    ours = PresetSource(config, Budgets.of(config), cache_dir=tmp_path, task=mlm_task())
    assert ours.check_text(0)["input_ids"].shape[0] == CHECK_TEXTS
