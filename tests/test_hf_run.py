"""`prunebench run --model <HF folder>` in process, on a tiny random BERT and a small labelled CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunebench.config import HF_DEFAULTS, HF_SPARSITIES, RunConfig
from prunebench.results import ResultStore
from prunebench.results.correctness import unpack_correct
from prunebench.runner.pipeline import execute_run
from prunebench.runner.rundir import prepare
from tests import hf_text_fixtures as fx


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return fx.base_model_folder(tmp_path)


def test_hf_run_defaults_to_three_sparsities_and_rejects_unknown_models(model_dir: Path):
    config = RunConfig(model=str(model_dir), seq_len=32)
    assert config.is_hf
    assert {s for _, m, s in config.variants() if m == "structured"} == set(HF_SPARSITIES)
    assert len(config.variants()) == 3 * (len(config.methods) - 1) + 1  # 2:4 fixes its own sparsity
    with pytest.raises(ValueError, match="or a Hugging Face model folder"):
        RunConfig(model=str(model_dir.parent))


def test_hf_run_defaults_are_trimmed_and_every_option_still_wins(model_dir: Path):
    # What the CLI and TOML build (from_dict): the default HF run's methods and batch sizes ...
    config = RunConfig.from_dict({"model": str(model_dir), "seq_len": 32})
    assert config.methods == HF_DEFAULTS["methods"] and config.batch_sizes == HF_DEFAULTS["batch_sizes"]
    assert {s for _, _, s in config.variants()} == set(HF_SPARSITIES)
    # ... which explicit options replace, one by one.
    wide = RunConfig.from_dict({"model": str(model_dir), "seq_len": 32, "batch_sizes": [1, 2, 4, 8, 16]})
    assert wide.batch_sizes == (1, 2, 4, 8, 16) and wide.methods == HF_DEFAULTS["methods"]
    every = RunConfig.from_dict({"model": str(model_dir), "seq_len": 32, "methods": list(RunConfig().methods)})
    assert every.methods == RunConfig().methods and every.batch_sizes == HF_DEFAULTS["batch_sizes"]
    # The run of our own encoder keeps its defaults.
    assert RunConfig.from_dict({"model": "medium"}) == RunConfig()
    assert RunConfig.from_dict({"model": str(model_dir), "seq_len": 32, "recovery_seconds": 0}).recovery_seconds == 0
    with pytest.raises(ValueError, match="recovery_seconds"):
        RunConfig(recovery_seconds=-1.0)
    with pytest.raises(ValueError, match="max_positions 64"):
        RunConfig(model=str(model_dir), seq_len=128)


def test_hf_run_prunes_checks_evaluates_and_times(model_dir: Path, tmp_path: Path):
    csv = fx.sentiment_csv(tmp_path / "reviews.csv", n=200)
    config = RunConfig(model=str(model_dir), methods=("structured", "magnitude"), sparsities=(0.5,),
                       batch_sizes=(1,), seq_len=16, threads=1, quick=True, task=f"csv:{csv}", allow_busy=True)
    run_dir, config = prepare(tmp_path / "run", config, resume=False, force=False)
    seen: list[tuple[str, str, float]] = []
    outcome = execute_run(config, run_dir, cache_dir=tmp_path / "cache",
                          progress=lambda stage, detail, done, total: seen.append((stage, detail, done)))
    assert outcome.failed_variants == [] and outcome.failed_cells == 0
    # The bar moves while the structured variant's distillation runs, not only when its unit ends.
    recovery = [(d, done) for stage, d, done in seen if stage == "prune" and d.startswith("structured@0.5: recovery")]
    assert recovery and all(done != int(done) for _, done in recovery)
    assert [done for _, done in recovery] == sorted(done for _, done in recovery)
    with ResultStore(run_dir.store) as store:
        snap = store.snapshot()
    variants = {v["name"]: v for v in snap["variants"]}
    assert set(variants) == {"dense", "structured@0.5", "magnitude@0.5"}
    assert all(v["fidelity"]["ok"] for v in variants.values())
    assert variants["structured@0.5"]["encoder_params"] < variants["dense"]["encoder_params"]
    assert variants["structured@0.5"]["fidelity"]["reload_ok"]
    evals = {e["variant"]: e for e in snap["evaluations"]}
    dense = evals["dense"]["details"]
    assert evals["dense"]["metric_name"] == "probe_accuracy"
    assert dense["extra"]["deltas"]["probe_accuracy"]["delta"] == 0.0 and dense["loss"] is None
    bits = unpack_correct(dense["correct"], dense["n_predictions"])
    assert bits.mean() == pytest.approx(evals["dense"]["accuracy"])
    assert evals["structured@0.5"]["cosine"] < 1.0
    assert {c["variant"] for c in snap["cells"]} == {"dense", "structured@0.5", "magnitude@0.5"}
    assert (run_dir.root / "summary.md").is_file()


def test_eval_command_scores_an_hf_folder_against_its_reference(model_dir: Path, tmp_path: Path, capsys):
    import copy
    import json

    import torch

    from prunebench.cli.main import main
    from prunebench.models.hf import load_hf_model

    csv = fx.sentiment_csv(tmp_path / "reviews.csv", n=120)
    hurt_dir = tmp_path / "hurt"
    hurt = copy.deepcopy(load_hf_model(model_dir))
    with torch.no_grad():
        hurt.encoder.layer[0].output.dense.weight.mul_(0.0)
    hurt.save_pretrained(str(hurt_dir))
    fx.tokenizer(hurt_dir)
    args = ["eval", str(hurt_dir), "--reference", str(model_dir), "--task", f"csv:{csv}", "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["extra"]["kind"] == "base" and doc["hidden_cosine"] == doc["extra"]["metrics"]["embedding_cosine"] < 1
    assert set(doc["extra"]["deltas"]) == {"probe_accuracy", "probe_macro_f1"} and doc["metric"] == "probe_accuracy"
    assert main(["eval", str(model_dir), "--task", f"csv:{csv}"]) == 0
    assert "no measurable change" in capsys.readouterr().out
