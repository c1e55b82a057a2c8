"""A step that fails inside a run says so on the variant, in the summary and the report, not only in run.log:
distillation over batches without a masked token or with a NaN loss, a refit that cannot be solved, an
evaluation that scores too few predictions, a task the dense model scores below its trivial baseline, every
stage in run.log, and a loaded folder whose weights lack a module."""

from __future__ import annotations

import copy
import logging
from itertools import repeat
from pathlib import Path

import pytest
import torch

from prunebench.analysis import analyze
from prunebench.analysis.accuracy import MIN_PREDICTIONS, TOO_FEW, UNFIT
from prunebench.models.io import nonfinite_tensor
from prunebench.report.notes import accuracy_floor_note
from prunebench.report.summary import status_tag, summary_rows, verdict
from prunebench.results.correctness import pack_correct
from prunebench.runner.variants import make_variant, prune_spec
from tests.conftest import random_batch

transformers = pytest.importorskip("transformers")

from prunebench.tasks.hf_distill import EMPTY_BATCH_LIMIT, distill_, distill_loss  # noqa: E402
from prunebench.tasks.hf_eval import Pooling  # noqa: E402
from tests import hf_text_fixtures as fx  # noqa: E402

AMINO = "ACDEFGHIKLMNPQRSTVWY"


def _mlm(tmp: Path):
    tok = fx.tokenizer(tmp / "tok")
    return tok, fx.mlm_model(tok)


def _batch(tok, labelled: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, len(tok), (4, 12), generator=gen)
    labels = torch.full_like(ids, -100)
    if labelled:
        labels[:, 3] = ids[:, 3]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_distillation_skips_batches_without_a_masked_token(tmp_path: Path) -> None:
    tok, teacher = _mlm(tmp_path)
    student = copy.deepcopy(teacher)
    empty = _batch(tok, labelled=False)
    # The loss of such a batch has no KL term instead of a KL over zero tokens (NaN).
    assert torch.isfinite(distill_loss(student, teacher, empty, Pooling()))
    start = _state(student)
    history = distill_(student, teacher, repeat(empty), seconds=None, max_steps=3, held_out=empty, warmup_steps=1)
    assert history.steps == 0 and history.skipped_batches == EMPTY_BATCH_LIMIT
    assert history.problem() == f"recovery did no step ({EMPTY_BATCH_LIMIT} batches without a masked token skipped)"
    assert nonfinite_tensor(student) is None and _same(student, start)
    # A labelled batch trains as before, and nothing is reported.
    ok = distill_(student, teacher, repeat(_batch(tok, labelled=True)), seconds=None, max_steps=2, warmup_steps=1)
    assert ok.steps == 2 and ok.problem() is None and ok.to_dict()["problem"] is None


def test_a_nan_loss_stops_distillation_before_its_step_and_keeps_the_start(tmp_path: Path) -> None:
    tok, teacher = _mlm(tmp_path)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        teacher.bert.encoder.layer[-1].output.LayerNorm.weight.fill_(float("nan"))  # the teacher's states: NaN
    start = _state(student)
    batch = _batch(tok, labelled=True)
    history = distill_(student, teacher, repeat(batch), seconds=None, max_steps=3, held_out=batch, warmup_steps=1)
    assert history.nonfinite_loss == "NaN" and history.steps == 0 and history.reverted
    assert history.problem() == "recovery failed: loss NaN at step 0, reverted"
    assert _same(student, start)  # no NaN step was applied, and no NaN held-out loss counted as the best


def test_a_refit_that_cannot_be_solved_is_undone_and_recorded(tiny_model) -> None:
    spec = prune_spec("structured", 0.5, seed=0, iterative_steps=1, schedule="one_shot")
    check = random_batch(tiny_model.config.vocab_size, seed=1)
    padding_only = {**random_batch(tiny_model.config.vocab_size), "attention_mask": torch.zeros(3, 10).long()}
    plain_model, plain = make_variant(tiny_model, "s", spec, seq_len=10, calib=None, on_step=None,
                                      check_batch=check, save_dir=None)
    model, record = make_variant(tiny_model, "s", spec, seq_len=10, calib=None, on_step=None, check_batch=check,
                                 save_dir=None, refit_calib=[padding_only])
    problems = record["details"]["step_problems"]
    assert len(problems) == 1 and problems[0].startswith("refit failed: ") and problems[0].endswith(", reverted")
    assert record["details"]["refit"]["projections"] == 0 and record["fidelity"]["ok"]
    assert plain["details"]["step_problems"] == []
    # Undone: the variant computes exactly what the same shrink without a refit computes.
    with torch.no_grad():
        assert torch.equal(model.encode(check["input_ids"], check["attention_mask"]),
                           plain_model.encode(check["input_ids"], check["attention_mask"]))


def _snapshot(n: int, dense_acc: float, variant_acc: float, trivial: float, problems: tuple[str, ...] = ()) -> dict:
    def evaluation(name: str, acc: float) -> dict:
        hits = round(acc * n)
        bits = [True] * hits + [False] * (n - hits)
        return {"variant": name, "accuracy": hits / n, "trivial_accuracy": trivial, "metric_name": "accuracy",
                "details": {"correct": pack_correct(bits), "n_predictions": n, "task_key": "k", "split": "test",
                            "seed": 0}}

    variants = [{"name": "dense", "method": "dense", "status": "ok", "params": 10, "fidelity": {"ok": True}},
                {"name": "wanda@0.5", "method": "wanda", "status": "ok", "params": 10, "fidelity": {"ok": True},
                 "details": {"step_problems": list(problems)}}]
    return {"run": {"status": "finished", "config": {"seq_len": 8}}, "variants": variants,
            "evaluations": [evaluation("dense", dense_acc), evaluation("wanda@0.5", variant_acc)], "cells": []}


def test_an_evaluation_below_the_floor_gives_no_verdict() -> None:
    few = analyze(_snapshot(MIN_PREDICTIONS - 1, 0.5, 0.5, 0.1))
    row = next(r for r in summary_rows(few) if r.variant == "wanda@0.5")
    assert few.variant("wanda@0.5").accuracy_verdict == TOO_FEW
    assert "(too few predictions)" in _accuracy_cell(row) and "no measurable change" not in verdict(few)
    assert f"only {MIN_PREDICTIONS - 1} predictions" in verdict(few)
    enough = analyze(_snapshot(MIN_PREDICTIONS, 0.5, 0.5, 0.1))
    assert enough.variant("wanda@0.5").accuracy_verdict == "no measurable change"
    assert accuracy_floor_note(enough, enough.variants[1:]) == []


def test_dense_below_its_trivial_baseline_says_the_task_does_not_fit() -> None:
    unfit = analyze(_snapshot(1000, 0.05, 0.0, 0.3))
    assert unfit.task_unfit and unfit.variant("wanda@0.5").accuracy_verdict == UNFIT
    assert "the task does not fit the model" in verdict(unfit)
    fits = analyze(_snapshot(1000, 0.6, 0.6, 0.3))
    assert not fits.task_unfit and "does not fit" not in verdict(fits)


def test_step_problems_show_in_the_status_column_and_the_problems() -> None:
    a = analyze(_snapshot(1000, 0.6, 0.6, 0.3, ("recovery failed: loss NaN at step 0, reverted",)))
    row = next(r for r in summary_rows(a) if r.variant == "wanda@0.5")
    assert status_tag(row) == "recovery failed: loss NaN at step 0, reverted"
    assert row.problems == ("recovery failed: loss NaN at step 0, reverted",)


def _accuracy_cell(row) -> str:
    from prunebench.report.summary import summary_cells, summary_headers

    return summary_cells(row)[summary_headers([row]).index("accuracy (Δ)")]


def _amino_mlm_folder(tmp: Path) -> Path:
    """A tiny masked-LM whose tokenizer knows only amino-acid letters (as AntiBERTy): Python source is all [UNK],
    which is special, so no token of the corpus can be masked."""
    folder = tmp / "amino"
    vocab = fx.SPECIALS + list(AMINO) + [f"##{c}" for c in AMINO]
    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=False)
    tok.save_pretrained(str(folder))
    fx.mlm_model(tok).save_pretrained(str(folder))
    return folder


def test_a_masked_lm_without_masked_tokens_shows_its_failed_steps(tmp_path: Path, caplog) -> None:
    from prunebench.config import RunConfig
    from prunebench.runner.pipeline import execute_run
    from prunebench.runner.rundir import prepare

    config = RunConfig(model=str(_amino_mlm_folder(tmp_path)), methods=("structured",), sparsities=(0.5,),
                       batch_sizes=(1,), seq_len=16, threads=1, quick=True, allow_busy=True,
                       min_time=0.05, max_time=0.2)
    run_dir, config = prepare(tmp_path / "run", config, resume=False, force=False)
    with caplog.at_level(logging.INFO, logger="prunebench"):
        execute_run(config, run_dir, cache_dir=tmp_path / "cache", corpus_root=fx.corpus_root(tmp_path / "src"))
    summary = (run_dir.root / "summary.md").read_text()
    html = (run_dir.root / "report.html").read_text()
    no_step = f"recovery did no step ({EMPTY_BATCH_LIMIT} batches without a masked token skipped)"
    row = next(line for line in summary.splitlines() if line.startswith("| structured@0.5 "))
    assert no_step in row.split("|")[-2]  # the status column
    assert no_step in html
    # An evaluation with nothing to score says so, for dense as for the variant.
    assert "dense: evaluation failed: " in summary and "evaluation failed: " in html
    # run.log of the run (the prunebench logger) has a line for every stage, from the start.
    logged = [r.getMessage() for r in caplog.records if r.name == "prunebench.runner.stages"]
    assert logged[0].startswith("run started in ")
    for stage in ("data", "train", "prune", "eval", "bench", "report"):
        assert any(m.startswith(f"[{stage}] ") for m in logged), stage


def test_a_folder_without_pooler_weights_is_named_in_one_warning(tmp_path: Path, caplog) -> None:
    from safetensors.torch import load_file, save_file

    from prunebench.models.hf import load_hf_model

    folder = fx.base_model_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="prunebench"):
        load_hf_model(folder)
    assert not [r for r in caplog.records if r.name.startswith("prunebench")]
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("pooler.")}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="prunebench"):
        load_hf_model(folder)
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("prunebench")]
    assert len(warned) == 1 and "nothing for pooler.dense;" in warned[0] and "\n" not in warned[0]
