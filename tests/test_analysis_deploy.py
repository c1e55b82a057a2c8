"""The "what to deploy" view: speedups vs dense eager and vs dense on the same backend, Pareto, crossovers."""

from __future__ import annotations

import pytest

from prunebench.analysis.deploy import accuracy_of, best_per_batch, crossovers, deploy_front, deploy_rows


def cell(variant, backend, b, speedup, status="ok"):
    return {"variant": variant, "backend": backend, "batch_size": b, "seq_len": 128, "status": status,
            "speedup": speedup, "speedup_ci_low": speedup * 0.98, "speedup_ci_high": speedup * 1.02,
            "latency_ms": 10.0 / speedup}


CELLS = [
    cell("dense", "eager", 1, 1.0), cell("dense", "eager", 16, 1.0),
    cell("structured@0.5", "eager", 1, 1.75), cell("structured@0.5", "eager", 16, 1.9),
    cell("dense", "onnxruntime-int8", 1, 3.9), cell("dense", "onnxruntime-int8", 16, 3.0),
    cell("structured@0.5", "onnxruntime-int8", 1, 5.2), cell("structured@0.5", "onnxruntime-int8", 16, 4.8),
    cell("magnitude@0.9", "sparse", 1, 1.4), cell("magnitude@0.9", "sparse", 16, 6.0),
    cell("magnitude@0.9", "sparse", 4, 9.0, status="error"),
]
ACC = {("dense", "eager"): 0.121, ("structured@0.5", "eager"): 0.113, ("magnitude@0.9", "eager"): 0.10,
       ("dense", "onnxruntime-int8"): 0.120, ("structured@0.5", "onnxruntime-int8"): 0.112}


def test_rows_give_both_speedups_and_skip_failed_cells():
    rows = deploy_rows(CELLS, ACC, numerics_changed=["onnxruntime-int8"])
    by = {(r.variant, r.backend, r.batch_size): r for r in rows}
    assert (("magnitude@0.9", "sparse", 4)) not in by
    r = by["structured@0.5", "onnxruntime-int8", 1]
    assert r.speedup == 5.2 and r.vs_same_backend == pytest.approx(5.2 / 3.9) and r.accuracy == 0.112
    assert by["structured@0.5", "eager", 16].vs_same_backend == pytest.approx(1.9)
    assert by["magnitude@0.9", "sparse", 1].vs_same_backend is None  # no dense cell on sparse
    assert by["magnitude@0.9", "sparse", 1].accuracy == 0.10  # sparse keeps eager numerics: eager accuracy
    assert [r.speedup for r in rows if r.batch_size == 1] == sorted((r.speedup for r in rows if r.batch_size == 1),
                                                                   reverse=True)


def test_a_changed_backend_never_borrows_eager_accuracy():
    rows = deploy_rows([cell("magnitude@0.9", "int8", 1, 2.0)], ACC, numerics_changed=["int8"])
    assert rows[0].accuracy is None
    assert accuracy_of(ACC, "magnitude@0.9", "int8") == 0.10  # the fallback, when numerics do not change


def test_pareto_front_keeps_only_undominated_pairs():
    rows = deploy_rows(CELLS, ACC, numerics_changed=["onnxruntime-int8"])
    front = deploy_front(rows, 1)
    labels = [(r.variant, r.backend) for r in front]
    # dense eager (0.121, 1.0) is the most accurate; ORT int8 dense (0.120, 3.9) and structured ORT (0.112, 5.2)
    # trade accuracy for speed; structured eager (0.113, 1.75) is dominated by dense ORT int8.
    assert labels == [("structured@0.5", "onnxruntime-int8"), ("dense", "onnxruntime-int8"), ("dense", "eager")]


def test_deploy_front_ties_follow_the_runs_rule():
    """Equally fast, equally accurate pairs all stay (ordered by name); equally fast but less accurate goes."""
    from prunebench.analysis.core import pareto_front

    cells = [cell("b", "eager", 1, 2.0), cell("a", "sparse", 1, 2.0), cell("c", "eager", 1, 2.0),
             cell("dense", "eager", 1, 1.0)]
    acc = {("a", "eager"): 0.5, ("b", "eager"): 0.5, ("c", "eager"): 0.4, ("dense", "eager"): 0.6}
    front = deploy_front(deploy_rows(cells, acc), 1)
    assert [(r.variant, r.backend) for r in front] == [("a", "sparse"), ("b", "eager"), ("dense", "eager")]
    # The run's front on the same points (latency = 10 ms / speedup) marks the same ones.
    run = pareto_front([(r.variant, r.latency_ms, r.accuracy) for r in deploy_rows(cells, acc)])
    assert {p.variant for p in run if p.on_front} == {r.variant for r in front}


def test_crossovers_where_the_best_choice_changes():
    rows = deploy_rows(CELLS, ACC, numerics_changed=["onnxruntime-int8"])
    best = best_per_batch(rows)
    assert (best[1].variant, best[1].backend) == ("structured@0.5", "onnxruntime-int8")
    assert (best[16].variant, best[16].backend) == ("magnitude@0.9", "sparse")
    assert crossovers(rows) == [{"batch_size": 16, "from": "structured@0.5 / onnxruntime-int8",
                                 "to": "magnitude@0.9 / sparse"}]
    # Demanding accuracy >= 0.11 rules the 90% model out: no crossover left.
    assert crossovers(rows, min_accuracy=0.11) == []


def test_markdown_section_names_every_pair_front_and_crossover():
    from prunebench.report.deploy import deploy_markdown

    rows = deploy_rows(CELLS, ACC, numerics_changed=["onnxruntime-int8"])
    text = deploy_markdown(rows, {"structured@0.5 / sparse": "no Linear is at least 50% zeros"})
    assert text.startswith("## What to deploy")
    row = "| structured@0.5 | onnxruntime-int8 | 11.2% | 5.20x [5.10-5.30] | 4.80x [4.70-4.90] | 1.33x | 1.60x |"
    assert row in text
    assert "- B=1: structured@0.5 / onnxruntime-int8 (5.20x, 11.2%), dense / onnxruntime-int8" in text
    assert "from B=16 magnitude@0.9 / sparse beats structured@0.5 / onnxruntime-int8" in text
    assert "- structured@0.5 / sparse: no Linear is at least 50% zeros" in text
    assert deploy_markdown([]) == ""


def test_snapshot_rows_take_backend_accuracy_and_skips():
    from prunebench.report.deploy import deploy_html, deploy_markdown, snapshot_rows

    assert snapshot_rows({"cells": [cell("dense", "eager", 1, 1.0)]}) == ([], {})
    cells = [cell("dense", "eager", 1, 1.0), cell("structured@0.5", "eager", 1, 1.75),
             {**cell("structured@0.5", "int8", 1, 2.5), "backend_changes_numerics": True, "backend_accuracy": 0.11},
             {**cell("dense", "int8", 1, 1.8), "backend_changes_numerics": True},
             {**cell("dense", "sparse", 1, 1.0, status="skipped"), "speedup": None, "error": "no zeros"},
             # A skip as stores written before the ``skipped`` status kept it: read as the same skip.
             {**cell("structured@0.5", "sparse", 1, 1.0, status="error"), "speedup": None, "error": "skipped: shrunk",
              "backend_status": "skipped", "backend_message": "shrunk"}]
    snap = {"cells": cells, "evaluations": [{"variant": "dense", "accuracy": 0.12},
                                            {"variant": "structured@0.5", "accuracy": 0.113}]}
    rows, skips = snapshot_rows(snap)
    by = {(r.variant, r.backend): r for r in rows}
    assert by["structured@0.5", "int8"].accuracy == 0.11 and by["structured@0.5", "eager"].accuracy == 0.113
    assert by["dense", "int8"].accuracy is None  # int8 changes numerics: not eager's accuracy
    assert skips == {"dense / sparse": "no zeros", "structured@0.5 / sparse": "shrunk"}
    assert ("dense", "sparse") not in by and ("structured@0.5", "sparse") not in by
    fragment = deploy_html(deploy_markdown(rows, skips))
    assert fragment.startswith('<section id="deploy">') and "<td>structured@0.5</td>" in fragment
    assert "<h2>What to deploy</h2>" in fragment and "no zeros" in fragment
