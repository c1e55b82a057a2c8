"""Verdicts against the measured noise floor, accuracy differences with their CI, and the contention flag."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from torch import nn

from prunebench.analysis import (
    analyze,
    analyze_cells,
    analyze_variants,
    mostly_busy,
    noise_margin,
    pareto_front,
    speedup_verdict,
)
from prunebench.analysis.accuracy import accuracy_verdict
from prunebench.analysis.bootstrap import paired_delta_ci
from prunebench.bench.inputs import make_inputs
from prunebench.bench.load import CpuMeter
from prunebench.bench.settings import BenchSettings
from prunebench.bench.sweep import sweep
from prunebench.bench.timing import WallTimer
from prunebench.models.presets import create_model
from prunebench.report import summary_cells, summary_rows
from prunebench.report.html import render_report
from prunebench.report.markdown import render_summary_md
from prunebench.report.summary import verdict
from prunebench.results import CellRecord
from prunebench.results.correctness import pack_correct, unpack_correct
from tests.test_results_synthetic import make_snapshot

# allow_busy: a busy shared machine must not leave these cells unmeasured (test_contention.py tests that).
FAST = BenchSettings(warmup=1, min_time=0.0, min_pairs=4, max_time=0.5, target_ci=None, n_boot=200,
                     measure_memory=False, block_pairs=2, min_blocks=3, allow_busy=True)


def _cell(variant: str, s: float, lo: float, hi: float, b: int = 8) -> dict:
    return {"variant": variant, "batch_size": b, "seq_len": 16, "status": "ok", "speedup": s,
            "speedup_ci_low": lo, "speedup_ci_high": hi, "latency_ms": 10.0 / s}


def test_verdicts_must_clear_the_twins_band() -> None:
    # The default run's B=8 twin once read 1.02x [1.00-1.04]: a 1.03x [1.01-1.05] variant is inside that band.
    cells = analyze_cells([_cell("dense", 1.02, 1.00, 1.04), _cell("a", 1.03, 1.01, 1.05),
                           _cell("b", 1.10, 1.06, 1.14), _cell("c", 0.90, 0.85, 0.95), _cell("a", 1.03, 1.01, 1.05, 1)])
    by = {(c.variant, c.batch_size): c for c in cells}
    assert by[("dense", 8)].verdict == "same" and by[("dense", 8)].noise_margin == pytest.approx(0.04)
    assert by[("a", 8)].verdict == "same"
    assert by[("b", 8)].verdict == "faster" and by[("c", 8)].verdict == "slower"
    # No twin measured at B=1: judged against 1 alone, as before.
    assert by[("a", 1)].verdict == "faster" and by[("a", 1)].noise_margin == 0.0
    assert speedup_verdict(1.05, 1.1, margin=0.04) == "faster" and speedup_verdict(1.03, 1.1, margin=0.04) == "same"
    assert noise_margin(None) == 0.0


class SharedClock(dict):
    """The fake clock; the sweep's deep copy of the baseline (its twin) must share it, not copy it."""

    def __deepcopy__(self, memo: dict) -> SharedClock:
        return self


class FakeModel(nn.Module):
    """Advances a fake clock: ``cost`` per call, plus 5% when the previous call was another model's (an order
    bias like a cold cache), plus seeded noise."""

    def __init__(self, clock: dict, cost: float, rng: np.random.Generator) -> None:
        super().__init__()
        self.clock, self.cost, self.rng = clock, cost, rng
        self.lin = nn.Linear(1, 1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bias = 1.05 if self.clock.get("last") is not self else 1.0
        self.clock["now"] += self.cost * bias * (1 + 0.01 * self.rng.standard_normal())
        self.clock["last"] = self
        return ids


def test_twin_is_never_faster_or_slower_on_a_fake_clock() -> None:
    for seed in range(4):
        clock = SharedClock(now=0.0, last=None)
        rng = np.random.default_rng(seed)
        now = lambda clock=clock: clock["now"]  # noqa: E731
        dense = FakeModel(clock, 1.0, rng)
        half = FakeModel(clock, 0.5, rng)
        settings = BenchSettings(**{**FAST.to_dict(), "max_time": 1e9, "min_blocks": 6})
        cells = sweep({"dense": dense, "half": half}, lambda b, s: make_inputs(10, b, s), batch_sizes=(1, 2),
                      seq_lens=(4,), settings=settings, timer=WallTimer(now), clock=now)
        analysed = {(c.variant, c.batch_size): c for c in analyze_cells([c.to_row() for c in cells])}
        for b in (1, 2):
            twin = analysed[("dense", b)]
            # ABBA/BAAB cancels the order bias: the twin reads 1 within the noise, and is never judged.
            assert twin.verdict == "same" and twin.speedup == pytest.approx(1.0, abs=0.02)
            assert analysed[("half", b)].verdict == "faster"
            assert analysed[("half", b)].speedup == pytest.approx(2.0, rel=0.03)


def test_twin_is_never_faster_or_slower_on_real_tiny_models() -> None:
    kw = {"vocab_size": 50, "d_model": 16, "n_heads": 2, "d_ff": 32}
    dense = create_model("custom", n_layers=2, **kw).eval()
    models = {"dense": dense, "copy": copy.deepcopy(dense)}
    cells = sweep(models, batch_sizes=(1, 4), seq_lens=(8,), settings=FAST)
    for c in analyze_cells([c.to_row() for c in cells]):
        if c.variant == "dense":
            assert c.verdict == "same" and c.speedup_ci_low <= c.speedup <= c.speedup_ci_high
            assert c.noise_margin >= max(abs(c.speedup_ci_low - 1), abs(c.speedup_ci_high - 1))


def test_paired_accuracy_ci() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random(2000) < 0.5
    same = ref.copy()
    same[:3] = ~same[:3]  # three flips either way: inside the noise
    worse = ref.copy()
    worse[np.flatnonzero(ref)[:150]] = False  # 150 of 2000 lost: -7.5 pp
    ci = paired_delta_ci(ref, same)
    assert ci.low <= 0 <= ci.high and accuracy_verdict(ci.low, ci.high) == "no measurable change"
    ci = paired_delta_ci(ref, worse)
    assert ci.delta == pytest.approx(-0.075) and ci.high < 0 and accuracy_verdict(ci.low, ci.high) == "less accurate"
    ci = paired_delta_ci(ref, ref)
    assert (ci.delta, ci.low, ci.high) == (0.0, 0.0, 0.0)
    assert (unpack_correct(pack_correct(list(worse)), 2000) == worse).all()


def _with_correctness(snap: dict, hits: dict[str, np.ndarray]) -> dict:
    for e in snap["evaluations"]:
        if e["variant"] in hits:
            h = hits[e["variant"]]
            e["accuracy"] = float(h.mean())
            e["details"] = {"correct": pack_correct(list(h)), "n_predictions": h.size, "task_key": "t", "seed": 0,
                            "split": "test"}
    return snap


def test_accuracy_inside_the_noise_reads_no_measurable_change_everywhere() -> None:
    rng = np.random.default_rng(1)
    dense = rng.random(3000) < 0.6
    wanda = dense.copy()
    # 60 predictions gained, 50 lost: +0.33 pp, more accurate on paper, not measurably (as pruned models do:
    # they disagree with dense both ways)
    wanda[np.flatnonzero(~dense)[:60]] = True
    wanda[np.flatnonzero(dense)[:50]] = False
    structured = dense.copy()
    structured[np.flatnonzero(dense)[:200]] = False  # -6.7 pp
    snap = _with_correctness(make_snapshot(), {"dense": dense, "wanda@0.5": wanda, "structured@0.5": structured})
    for c in snap["cells"]:
        if c["variant"] == "wanda@0.5" and c["batch_size"] == 1:
            c["latency_ms"] *= 1.01  # a hair slower than dense
    a = analyze(snap)
    assert a.variant("wanda@0.5").accuracy_verdict == "no measurable change"
    assert a.variant("structured@0.5").accuracy_verdict == "less accurate"
    rows = {r.variant: r for r in summary_rows(a)}
    assert "no measurable change" in summary_cells(rows["wanda@0.5"])[4]
    assert "[" in summary_cells(rows["structured@0.5"])[4]  # a measurable change shows its CI
    md = render_summary_md(snap, a)
    assert "No measurable change in accuracy" in md and "The most accurate pruned variant" not in md
    # Pareto at B=1: wanda is slower than dense and only "more accurate" inside the noise: not on the front
    # (compared as plain numbers, its +0.33 pp would keep it there).
    front = {p.variant: p.on_front for p in a.pareto[1]}
    assert front["wanda@0.5"] is False and front["dense"] is True
    points = [(p.variant, p.latency_ms, p.accuracy) for p in a.pareto[1]]
    assert {p.variant: p.on_front for p in pareto_front(points)}["wanda@0.5"] is True
    plain = analyze_variants(make_snapshot()["variants"], make_snapshot()["evaluations"])
    assert all(v.accuracy_verdict == "n/a" for v in plain)  # no correctness stored: no claim either way


def _flag(snap: dict, variant: str, batch: int, **fields) -> None:
    for c in snap["cells"]:
        if c["variant"] == variant and c["batch_size"] == batch:
            c.update(fields)


def test_busy_cells_are_one_line_and_a_collapsed_list() -> None:
    snap = make_snapshot()
    _flag(snap, "structured@0.5", 4, contended=True, other_cores=0.7, other_cores_max=0.9, discarded_blocks=2)
    _flag(snap, "wanda@0.5", 1, status="unmeasured", error="machine busy: 1 of 5 quiet blocks in 10.0 s (9 discarded)",
          discarded_blocks=9, other_cores_max=1.4)
    a = analyze(snap)
    rows = {r.variant: r for r in summary_rows(a)}
    structured = rows["structured@0.5"]
    assert structured.contended_cells == 1 and "1 cell contended" in summary_cells(structured)[-1]
    wanda = summary_cells(rows["wanda@0.5"])
    assert wanda[5] == "unmeasured (machine busy)" and "1 cell unmeasured" in wanda[-1] and "FAILED" not in wanda[5]
    assert rows["wanda@0.5"].failed_cells == 0  # the busy machine is no failure of the variant
    line = ("Machine busy: of 17 timed cells, 1 contended (measured while other processes held the cores) and 1 "
            "unmeasured (no quiet blocks within their time; shown without a speedup); 11 busy block(s) discarded "
            "and timed again, other processes up to 1.40 cores.")
    md = render_summary_md(snap, a)
    assert line in md and "<details><summary>The 2 cells</summary>" in md
    assert md.count("wanda@0.5 B=1 seq=32: unmeasured: machine busy: 1 of 5 quiet blocks") == 1
    html = render_report(snap, a, {})
    assert "<details><summary>The 2 cells</summary>" in html and "CONTENDED" in html
    assert "structured@0.5 B=4 seq=32: contended: other processes held 0.70 cores on average (up to 0.90), 2 " \
           "block(s) discarded" in html
    # Not most cells: the verdict ends with the line rather than opening with a warning.
    text = verdict(a, snap["run"])
    assert not text.startswith("This run's timings are not trustworthy")
    assert "2 of 17 timed cells were contended or unmeasured (a busy machine; listed below)." in text


def test_a_mostly_busy_run_opens_its_verdict_with_it_and_names_no_speedup_from_noise() -> None:
    snap = make_snapshot()
    for c in snap["cells"]:
        if c.get("status") == "ok":
            c["contended"] = True
    a = analyze(snap)
    text = verdict(a, snap["run"])
    assert text.startswith("This run's timings are not trustworthy: 17 of 17 timed cells were measured while other "
                           "processes held the cores")
    assert mostly_busy(a.cells) and not mostly_busy(analyze(make_snapshot()).cells)
    # The ideal-exceeding and in-the-noise cells of the issue: never the headline.
    snap = make_snapshot()
    _flag(snap, "nm2:4", 1, speedup=2.22, speedup_ci_low=0.72, speedup_ci_high=3.14)
    _flag(snap, "wanda@0.5", 1, speedup=4.55, speedup_ci_low=2.9, speedup_ci_high=6.2)
    text = verdict(analyze(snap), snap["run"])
    assert "The largest speedup whose CI clears the noise floor was structured@0.5 at B=4: 1.70× [1.60–1.80]" in text
    assert "nm2:4 at B=1" not in text.split("Faster than a perfect kernel")[0]
    assert ("Faster than a perfect kernel could run their FLOPs, beyond their CI: wanda@0.5 at B=1 (4.55× "
            "[2.90–6.20] against 1.92×). That is a timing fault") in text
    assert analyze(snap).cell("wanda@0.5", 1).beyond_ideal
    # Nothing clears the floor: said so, no speedup named.
    snap = make_snapshot()
    _flag(snap, "structured@0.5", 2, speedup_ci_low=0.95)
    _flag(snap, "structured@0.5", 4, speedup_ci_low=0.99)
    text = verdict(analyze(snap), snap["run"])
    assert "No pruned variant's speedup cleared the noise floor" in text and "largest speedup" not in text


def test_the_summary_says_when_accuracy_cannot_show_a_loss() -> None:
    rng = np.random.default_rng(2)
    n = 3000
    snap = make_snapshot()
    dense = rng.random(n) < 0.0666
    snap = _with_correctness(snap, {"dense": dense})
    ev = next(e for e in snap["evaluations"] if e["variant"] == "dense")
    ev["trivial_accuracy"] = float(dense.mean()) - 0.001  # as --quick trains it: 6.66% against 6.56%
    a = analyze(snap)
    assert a.accuracy_uninformative and a.dense_accuracy_ci[0] < ev["trivial_accuracy"] < a.dense_accuracy_ci[1]
    assert "the model has learned too little for the accuracy column to show a loss" in verdict(a, snap["run"])
    ev["trivial_accuracy"] = float(dense.mean()) / 2  # a model that learned something
    a = analyze(snap)
    assert not a.accuracy_uninformative and "cannot" not in verdict(a, snap["run"])
    assert "to show a loss" not in verdict(a, snap["run"])


def test_a_busy_sweep_flags_its_cells_and_the_store_keeps_the_figures() -> None:
    state = {"now": 0.0, "idle": 0.0, "cpu": 0.0}

    def machine(others: float) -> CpuMeter:
        def stat() -> tuple[float, int, int]:
            # Whatever time has passed: this process ran at 0.5 cores and the others at ``others``.
            dt = time.perf_counter() - state["now"]
            state["now"] += dt
            state["idle"] += dt * max(0.0, 2 - 0.5 - others)
            state["cpu"] += dt * 0.5
            return state["idle"], 2, 1

        return CpuMeter(stat=stat, cpu_clock=lambda: state["cpu"], wall_clock=lambda: state["now"],
                        load=lambda: 5.3, ticks_per_s=10**9)

    state["now"] = time.perf_counter()
    kw = {"vocab_size": 50, "d_model": 16, "n_heads": 2, "d_ff": 32}
    models = {"dense": create_model("custom", n_layers=2, **kw).eval(), "half": create_model("custom", n_layers=1,
                                                                                              **kw).eval()}
    calm = sweep(models, batch_sizes=(1,), seq_lens=(8,), settings=FAST, meter=machine(0.0))
    allowed = BenchSettings(**{**FAST.to_dict(), "allow_busy": True})
    loaded = sweep(models, batch_sizes=(2,), seq_lens=(8,), settings=allowed, meter=machine(1.4))
    assert not any(c.contended for c in calm) and all(c.contended and c.busy_allowed for c in loaded)
    assert all(c.load_1m_before == 5.3 and c.other_cores == pytest.approx(1.4, abs=0.05) for c in loaded)
    assert CellRecord.from_row(loaded[0].to_row()).contended is True
