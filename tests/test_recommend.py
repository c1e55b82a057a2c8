"""One recommendation per batch size: the (variant, backend) to deploy under an accuracy budget.

Synthetic store rows (no model, no timing): dense scores 800 of 1000 predictions; each variant or backend loses
a chosen number of them, so every accuracy change has a known paired CI. dense against its twin reads
[0.98, 1.02]: the noise floor is 0.02 on each side.
"""

from __future__ import annotations

import copy
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prunebench.analysis.deploy import CLOSEST, KEEP_DENSE, WITHIN_BUDGET, recommend
from prunebench.cli.main import main
from prunebench.config import RunConfig
from prunebench.report.build import write_report
from prunebench.report.deploy import recommendation_lines
from prunebench.results.correctness import pack_correct
from prunebench.runner.stages import RunOutcome
from tests.test_results_synthetic import fill_store

N = 1000
DENSE_HITS = np.arange(N) < 800


def details(lost: int) -> dict[str, Any]:
    """An evaluation's details: dense's predictions with ``lost`` of its correct ones wrong."""
    hits = DENSE_HITS.copy()
    hits[:lost] = False
    return {"correct": pack_correct(list(hits)), "n_predictions": N, "task_key": "t", "split": "test", "seed": 0}


def evaluation(name: str, lost: int, paired: bool = True) -> dict[str, Any]:
    return {"variant": name, "accuracy": (800 - lost) / N, "trivial_accuracy": 0.1,
            "details": details(lost) if paired else {}}


def cell(variant: str, b: int, speedup: float, low: float, high: float, backend: str = "eager",
         **extra: Any) -> dict[str, Any]:
    row = {"variant": variant, "backend": backend, "batch_size": b, "seq_len": 64, "status": "ok",
           "speedup": speedup, "speedup_ci_low": low, "speedup_ci_high": high, "latency_ms": 10.0 / speedup,
           "flop_ideal_speedup": 1.0 if variant == "dense" else 4.0}
    if backend != "eager":
        row["baseline_backend"] = "eager"
    return {**row, **extra}


def ort(variant: str, b: int, speedup: float, lost: int | None) -> dict[str, Any]:
    """A cell on onnxruntime-int8 (changes the numerics), with its own evaluation losing ``lost`` (None: none)."""
    own = {} if lost is None else {"backend_accuracy": (800 - lost) / N, "backend_evaluation": details(lost)}
    return cell(variant, b, speedup, speedup - 0.1, speedup + 0.1, "onnxruntime-int8",
                backend_changes_numerics=True, **own)


def snapshot(budget: float | None = None) -> dict[str, Any]:
    """B=1: structured@0.5 eager 1.8x (-0.5 pp), structured@0.7 eager 2.5x (-3 pp), dense on ORT int8 3.0x
    (-0.8 pp, its own evaluation; beyond its FLOP-ideal of 1, as int8 is), structured@0.5 on ORT int8 4.0x
    (-2 pp). B=16: only structured@0.7 eager is faster."""
    config: dict[str, Any] = {"model": "small", "seq_len": 64, "batch_sizes": [1, 16]}
    if budget is not None:
        config["max_accuracy_drop"] = budget
    names = ("dense", "structured@0.5", "structured@0.7")
    return {
        "run": {"run_id": "rec", "status": "finished", "config": config, "environment": {}},
        "variants": [{"name": n, "status": "ok", "fidelity": {"ok": True}} for n in names],
        "evaluations": [evaluation("dense", 0), evaluation("structured@0.5", 5), evaluation("structured@0.7", 30)],
        "cells": [
            cell("dense", 1, 1.0, 0.98, 1.02), cell("dense", 16, 1.0, 0.98, 1.02),
            cell("structured@0.5", 1, 1.8, 1.7, 1.9), cell("structured@0.5", 16, 1.01, 0.99, 1.03),
            cell("structured@0.7", 1, 2.5, 2.4, 2.6), cell("structured@0.7", 16, 1.3, 1.2, 1.4),
            ort("dense", 1, 3.0, 8), ort("structured@0.5", 1, 4.0, 20),
        ],
    }


def chosen(snap: dict[str, Any], budget: float | None = None) -> dict[int, tuple[str, str, str]]:
    return {r.batch_size: (r.outcome, r.variant, r.backend) for r in recommend(snap, budget)}


def test_the_fastest_pair_within_the_budget_at_each_batch_size() -> None:
    recs = {r.batch_size: r for r in recommend(snapshot())}
    r = recs[1]
    assert (r.outcome, r.variant, r.backend) == (WITHIN_BUDGET, "dense", "onnxruntime-int8")
    # Its own evaluation on the backend (-0.8 pp), paired against dense eager, not eager's 0.
    assert r.accuracy_delta == pytest.approx(-0.008) and r.accuracy_on == "onnxruntime-int8"
    assert r.accuracy_delta_ci_low < -0.008 < r.accuracy_delta_ci_high < 0
    assert (r.speedup, r.speedup_ci_low, r.speedup_ci_high) == (3.0, 2.9, 3.1) and r.faster_pairs == 4
    # B=16: the only faster pair loses 3 pp: nothing meets 1 pp, and the closest is named.
    assert (recs[16].outcome, recs[16].variant) == (CLOSEST, "structured@0.7")
    assert recs[16].accuracy_delta == pytest.approx(-0.03) and recs[16].accuracy_delta_ci_high < 0
    lines = recommendation_lines(recommend(snapshot()))
    assert lines[0].startswith("B=1, seq 64: deploy dense on onnxruntime-int8: 3.00× [2.90–3.10] against dense "
                               "eager, accuracy -0.8 pp [")
    assert "(paired 95% CI), measured on onnxruntime-int8, within the 1 pp accuracy budget" in lines[0]
    assert lines[1].startswith("B=16, seq 64: nothing faster than dense eager meets the 1 pp accuracy budget")
    assert "the closest is structured@0.7 on eager: 1.30× [1.20–1.40]" in lines[1]


@pytest.mark.parametrize(("budget", "expected"), [
    (0.1, (CLOSEST, "structured@0.5", "eager")),  # nothing within 0.1 pp: the smallest loss among faster pairs
    (0.5, (WITHIN_BUDGET, "structured@0.5", "eager")),  # exactly -0.5 pp is within
    (1.0, (WITHIN_BUDGET, "dense", "onnxruntime-int8")),
    (2.0, (WITHIN_BUDGET, "structured@0.5", "onnxruntime-int8")),
    (100.0, (WITHIN_BUDGET, "structured@0.5", "onnxruntime-int8")),
])
def test_the_budget_is_respected(budget: float, expected: tuple[str, str, str]) -> None:
    recs = recommend(snapshot(), budget)
    assert chosen(snapshot(), budget)[1] == expected
    for r in recs:
        assert r.max_accuracy_drop == budget
        if r.outcome == WITHIN_BUDGET:
            assert 100 * r.accuracy_delta >= -budget - 1e-9


def test_the_budget_defaults_to_the_runs_own() -> None:
    assert recommend(snapshot())[0].max_accuracy_drop == 1.0
    assert chosen(snapshot(budget=2.0))[1] == (WITHIN_BUDGET, "structured@0.5", "onnxruntime-int8")
    assert chosen(snapshot(budget=2.0), 1.0)[1] == (WITHIN_BUDGET, "dense", "onnxruntime-int8")  # given wins


def test_nothing_faster_keeps_dense_and_says_so() -> None:
    snap = snapshot()
    snap["cells"] = [c for c in snap["cells"] if c["variant"] == "dense" and c["backend"] == "eager"]
    snap["cells"].append(cell("structured@0.5", 1, 1.015, 1.01, 1.02))  # CI above 1, inside the noise floor
    (r, _) = recommend(snap)
    assert (r.outcome, r.variant, r.backend, r.faster_pairs) == (KEEP_DENSE, "dense", "eager", 0)
    line = recommendation_lines([r])[0]
    assert "nothing meets the 1 pp accuracy budget" in line and "the closest is dense on eager" in line


def _with_fast(extra: dict[str, Any], status: str = "ok") -> dict[str, Any]:
    """The snapshot plus wanda@0.5 at B=1: 9x against dense eager (FLOP-ideal 10x), no accuracy lost, with
    ``extra`` fields."""
    snap = snapshot()
    snap["variants"].append({"name": "wanda@0.5", "status": "ok", "fidelity": {"ok": True}})
    snap["evaluations"].append(evaluation("wanda@0.5", 0))
    snap["cells"].append({**cell("wanda@0.5", 1, 9.0, 8.8, 9.2), "flop_ideal_speedup": 10.0, "status": status,
                          **extra})
    return snap


def test_a_noisy_contended_or_suspect_faster_cell_is_never_recommended() -> None:
    # The control: measured quietly, the 9x pair is the choice (so the cases below are refused for their flaw).
    assert chosen(_with_fast({}))[1] == (WITHIN_BUDGET, "wanda@0.5", "eager")
    for flaw, status in (({"contended": True}, "ok"),  # measured while other processes held the cores
                         ({"speedup_ci_low": 0.9, "speedup_ci_high": 20.0}, "ok"),  # CI reaches below 1
                         ({"speedup_ci_low": 1.01}, "ok"),  # CI inside the noise floor (twin: +-0.02)
                         ({"flop_ideal_speedup": 2.0}, "ok"),  # eager, whole CI beyond its FLOP-ideal
                         ({}, "unmeasured"), ({"error": "boom"}, "error")):
        assert chosen(_with_fast(flaw, status))[1] == (WITHIN_BUDGET, "dense", "onnxruntime-int8"), flaw


def test_a_variant_that_failed_its_fidelity_check_is_never_recommended() -> None:
    snap = _with_fast({})
    snap["variants"][-1]["fidelity"] = {"ok": False}
    assert chosen(snap)[1] == (WITHIN_BUDGET, "dense", "onnxruntime-int8")


def test_a_backend_that_changes_numerics_never_borrows_eager_accuracy() -> None:
    snap = snapshot()
    snap["cells"].append(ort("structured@0.7", 1, 6.0, None))  # fastest, not evaluated on the backend
    assert chosen(snap, 100)[1] == (WITHIN_BUDGET, "structured@0.5", "onnxruntime-int8")
    snap["cells"][-1].update(backend_accuracy=0.77, backend_evaluation=details(30))
    assert chosen(snap, 100)[1] == (WITHIN_BUDGET, "structured@0.7", "onnxruntime-int8")


def test_a_pair_with_an_unknown_ci_loses_to_one_with_a_known_ci_within_budget() -> None:
    snap = _with_fast({})
    snap["evaluations"][-1] = evaluation("wanda@0.5", 0, paired=False)  # no per-prediction results: no CI
    recs = {r.batch_size: r for r in recommend(snap)}
    assert (recs[1].variant, recs[1].backend) == ("dense", "onnxruntime-int8")
    # Alone within the budget, it is named, with its CI said to be unknown.
    snap["cells"] = [c for c in snap["cells"] if c["backend"] == "eager"]
    snap["evaluations"] = [e for e in snap["evaluations"] if e["variant"] in ("dense", "wanda@0.5")]
    (r, _) = recommend(snap)
    assert (r.outcome, r.variant, r.accuracy_delta_ci_low) == (WITHIN_BUDGET, "wanda@0.5", None)
    assert "accuracy +0.0 pp (CI unknown)" in recommendation_lines([r])[0]


def test_equal_speedups_go_to_the_higher_ci_lower_bound() -> None:
    snap = snapshot()
    snap["cells"] = [c for c in snap["cells"] if c["backend"] == "eager"]
    for c in snap["cells"]:
        if c["variant"] != "dense" and c["batch_size"] == 1:
            c.update(speedup=2.001, speedup_ci_low=1.5 if c["variant"] == "structured@0.5" else 1.9)
    assert chosen(snap, 5)[1] == (WITHIN_BUDGET, "structured@0.7", "eager")
    snap["cells"][2]["speedup_ci_low"] = 1.95  # structured@0.5 at B=1 now has the higher lower bound
    assert chosen(snap, 5)[1] == (WITHIN_BUDGET, "structured@0.5", "eager")


@pytest.mark.parametrize("bad", [-1, -0.5, 101, float("nan"), float("inf"), True, "1"])
def test_run_config_refuses_a_bad_budget(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        RunConfig.from_dict({"model": "small", "max_accuracy_drop": bad}) if isinstance(bad, str) \
            else RunConfig(model="small", max_accuracy_drop=bad)


def test_run_config_takes_the_budget_from_a_mapping() -> None:
    assert RunConfig.from_dict({"model": "small", "max_accuracy_drop": 2}).max_accuracy_drop == 2.0
    assert RunConfig().max_accuracy_drop == 1.0


@pytest.mark.parametrize(("value", "message"), [
    ("-1", "max_accuracy_drop must be a number of percentage points in [0, 100], got -1.0"),
    ("abc", "'abc' is not a number of percentage points"),
])
def test_cli_refuses_a_bad_budget_before_any_folder(tmp_path: Path, capsys, value: str, message: str) -> None:
    out = tmp_path / "run"
    assert exit_code(["run", "--model", "small", "--quick", f"--max-accuracy-drop={value}", "--out", str(out),
                      "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "cache").exists()
    assert exit_code(["run", "--model", "small", "--set", f"max_accuracy_drop={value}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "max_accuracy_drop" in err and len(err.strip().splitlines()) == 1 and not out.exists()


def exit_code(argv: list[str]) -> int:
    """``main``'s exit code, whether it returns it or argparse raises it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_reports_open_with_the_recommendation(tmp_path: Path) -> None:
    snap = snapshot()
    paths = write_report(copy.deepcopy(snap), tmp_path)
    lines = recommendation_lines(recommend(snap))
    summary = paths["summary.md"].read_text()
    head = summary.split("\n")
    assert head[2] == "## Recommendation" and head[4].startswith("- B=1, seq 64: deploy dense on onnxruntime")
    assert summary.index("## Recommendation") < summary.index("compared 2 pruned variants")
    page = paths["report.html"].read_text()
    body = page[page.index("</h1>"):]
    first = body.index("<section")
    assert body[first:].startswith('<section id="recommendation"><h2>Recommendation</h2>')
    assert first < body.index('class="verdict">Run')  # above the verdict paragraph
    for line in lines:
        assert html.escape(line) in page
    data = json.loads(paths["results.json"].read_text())
    assert [(r["batch_size"], r["outcome"], r["variant"], r["backend"]) for r in data["recommendation"]] == [
        (1, WITHIN_BUDGET, "dense", "onnxruntime-int8"), (16, CLOSEST, "structured@0.7", "eager")]


def test_the_terminal_summary_opens_with_the_recommendation(tmp_path: Path, monkeypatch, capsys) -> None:
    from prunebench.cli import run_cmd

    def fake_run(config, run_dir, *, cache_dir, progress=None, executor=None, **kw):
        snap = snapshot(budget=config.max_accuracy_drop)
        fill_store(run_dir.root, snap)
        return RunOutcome(run_dir=run_dir.root)

    monkeypatch.setattr(run_cmd, "execute_run", fake_run)
    assert main(["run", "--model", "small", "--quick", "--batch-sizes", "1,16", "--seq-len", "64",
                 "--max-accuracy-drop", "2", "--out", str(tmp_path / "a"), "--cache-dir", str(tmp_path / "c")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines at its width
    sentence = "B=1, seq 64: deploy structured@0.5 on onnxruntime-int8: 4.00× [3.90–4.10] against dense eager"
    assert sentence in out and "within the 2 pp accuracy budget" in out
    assert "B=16, seq 64: nothing faster than dense eager meets the 2 pp accuracy budget" in out
    assert out.index(sentence) < out.index("prunebench summary")  # before the summary table


def test_run_json_carries_the_recommendation(tmp_path: Path, monkeypatch, capsys) -> None:
    from prunebench.cli import run_cmd

    def fake_run(config, run_dir, *, cache_dir, progress=None, executor=None, **kw):
        fill_store(run_dir.root, snapshot(budget=config.max_accuracy_drop))
        return RunOutcome(run_dir=run_dir.root)

    monkeypatch.setattr(run_cmd, "execute_run", fake_run)
    assert main(["run", "--model", "small", "--quick", "--set", "max_accuracy_drop=0.1", "--json",
                 "--out", str(tmp_path / "a"), "--cache-dir", str(tmp_path / "c")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["outcome"], r["variant"], r["max_accuracy_drop"]) for r in doc["recommendation"]] == [
        (CLOSEST, "structured@0.5", 0.1), (CLOSEST, "structured@0.7", 0.1)]
