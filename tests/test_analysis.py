"""The comparative analysis on hand-made rows: verdicts, ratios, crossovers, Pareto front."""

from __future__ import annotations

import pytest

from prunebench.analysis import (
    CellAnalysis,
    analyze,
    analyze_cells,
    analyze_variants,
    find_crossovers,
    main_seq_len,
    pareto_front,
    ratio,
    speedup_verdict,
)
from tests.test_results_synthetic import SEQ_LEN, make_snapshot


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [(1.01, 1.2, "faster"), (0.8, 0.99, "slower"), (0.99, 1.01, "same"), (1.0, 1.1, "same"), (None, 1.1, "n/a")],
)
def test_verdict_uses_the_whole_interval(low: float | None, high: float, verdict: str) -> None:
    assert speedup_verdict(low, high) == verdict


def test_ratio_guards() -> None:
    assert ratio(3, 2) == 1.5
    assert ratio(None, 2) is None and ratio(1, None) is None and ratio(1, 0) is None


def test_variant_figures_against_dense() -> None:
    variants = [
        {"name": "dense", "params": 100, "nonzero_params": 100, "disk_bytes": 400, "macs": 1000},
        {
            "name": "structured@0.5",
            "method": "structured",
            "params": 50,
            "nonzero_params": 40,
            "disk_bytes": 200,
            "macs": 500,
            "effective_macs": 400,
            "fidelity": {"max_abs_diff": 0.5, "ok": False},
        },
    ]
    evals = [{"variant": "dense", "accuracy": 0.9}, {"variant": "structured@0.5", "accuracy": 0.75}]
    dense, pruned = analyze_variants(variants, evals)
    assert dense.params_ratio == 1.0 and dense.accuracy_delta == 0.0 and dense.fidelity_ok is None
    assert pruned.params_ratio == 0.5 and pruned.nonzero_ratio == 0.4 and pruned.disk_ratio == 0.5
    # FLOP-ideal speedup is against the dense model's MACs, not the shrunk model's own dense count.
    assert pruned.flop_ideal_speedup == 2.5
    assert pruned.accuracy_delta == pytest.approx(-0.15)
    assert pruned.fidelity_ok is False and pruned.fidelity_max_abs_diff == 0.5


def test_variants_without_dense_or_evaluation() -> None:
    (v,) = analyze_variants([{"name": "wanda@0.5", "macs": 10, "effective_macs": 5}], [])
    assert v.params_ratio is None and v.accuracy is None and v.accuracy_delta is None
    assert v.flop_ideal_speedup == 2.0  # falls back to the variant's own MACs


def _cell(variant: str, b: int, s: float, lo: float, hi: float, **kw: object) -> dict:
    return {
        "variant": variant,
        "batch_size": b,
        "seq_len": 16,
        "status": "ok",
        "speedup": s,
        "speedup_ci_low": lo,
        "speedup_ci_high": hi,
        "latency_ms": 10.0 / s,
        "peak_memory_bytes": 100,
        **kw,
    }


def test_cells_realized_over_ideal_and_memory_ratio() -> None:
    variants = analyze_variants([{"name": "dense"}, {"name": "p", "method": "m"}], [])
    cells = analyze_cells(
        [
            _cell("p", 2, 1.5, 1.4, 1.6, flop_ideal_speedup=2.0, peak_memory_bytes=50),
            _cell("dense", 2, 1.0, 1.0, 1.0),
            _cell("p", 1, 1.0, 0.9, 1.1, status="error", error="boom"),
        ],
        variants,
    )
    assert [(c.variant, c.batch_size) for c in cells] == [("dense", 2), ("p", 1), ("p", 2)]
    failed, ok = cells[1], cells[2]
    assert ok.realized_over_ideal == 0.75 and ok.peak_memory_ratio == 0.5 and ok.verdict == "faster"
    assert ok.method == "m"
    # a failed cell carries no figures, whatever the producer left in it
    assert failed.status == "error" and failed.speedup is None and failed.verdict == "n/a" and failed.error == "boom"


def _analysed(rows: list[tuple[int, float, float]]) -> list[CellAnalysis]:
    return analyze_cells([_cell("p", b, (lo + hi) / 2, lo, hi) for b, lo, hi in rows])


def test_crossover_starts_and_stops_being_faster() -> None:
    cells = _analysed([(1, 0.9, 1.05), (2, 1.02, 1.2), (4, 1.1, 1.3), (8, 0.8, 0.95)])
    got = [(c.kind, c.previous_batch_size, c.batch_size, c.before, c.after) for c in find_crossovers(cells)]
    assert got == [("starts_faster", 1, 2, "same", "faster"), ("stops_faster", 4, 8, "faster", "slower")]


def test_no_crossover_when_verdict_never_changes_to_or_from_faster() -> None:
    # same -> slower is a change, but not a crossover of "faster than dense"
    assert find_crossovers(_analysed([(1, 0.95, 1.05), (2, 0.8, 0.9), (4, 0.7, 0.8)])) == []
    assert find_crossovers(_analysed([(1, 1.1, 1.2), (2, 1.2, 1.3)])) == []


def test_crossover_ignores_failed_cells_between() -> None:
    cells = analyze_cells(
        [_cell("p", 1, 0.9, 0.8, 0.95), _cell("p", 2, 1, 1, 1, status="error"), _cell("p", 4, 1.3, 1.2, 1.4)]
    )
    (c,) = find_crossovers(cells)
    assert (c.previous_batch_size, c.batch_size, c.kind) == (1, 4, "starts_faster")


def test_pareto_front() -> None:
    points = [("a", 10.0, 0.9), ("b", 5.0, 0.8), ("c", 6.0, 0.7), ("d", 5.0, 0.8), ("e", 20.0, 0.9), ("f", 2, 0.1)]
    front = {p.variant: p.on_front for p in pareto_front(points)}
    # c is beaten by b (faster and more accurate); e by a (same accuracy, faster); b and d tie: both stay
    assert front == {"a": True, "b": True, "c": False, "d": True, "e": False, "f": True}
    assert [p.variant for p in pareto_front(points)] == ["f", "b", "d", "c", "a", "e"]
    assert pareto_front([]) == []


def test_pareto_ties_and_measurability() -> None:
    """The one tie rule: equal latency and accuracies that are not measurably different keep both points."""
    points = [("a", 5.0, 0.80), ("b", 5.0, 0.81), ("c", 4.0, 0.79), ("d", 6.0, 0.83)]

    def never(q: str, p: str) -> bool:  # every difference inside the noise
        return False

    assert {p.variant: p.on_front for p in pareto_front(points, never)} == {
        "a": False, "b": False, "c": True, "d": False}  # c is faster and not measurably worse than all
    tied = [("a", 5.0, 0.80), ("b", 5.0, 0.81)]
    assert [p.on_front for p in pareto_front(tied, never)] == [True, True]  # a tie: neither dominates
    assert {p.variant: p.on_front for p in pareto_front(tied)} == {"a": False, "b": True}  # plain numbers: b wins

    def d_measurably(q: str, p: str) -> bool:
        return q == "d"

    assert {p.variant: p.on_front for p in pareto_front(points, d_measurably)} == {
        "a": False, "b": False, "c": True, "d": True}  # slower but measurably more accurate: stays
    # One variant timed on two node classes: its points do not compete with each other, only with others.
    assert [p.on_front for p in pareto_front([("x", 3.0, 0.5), ("x", 4.0, 0.5), ("y", 4.5, 0.5)])] == [
        True, True, False]


def test_main_seq_len() -> None:
    cells = [{"seq_len": 64}, {"seq_len": 128}]
    assert main_seq_len({"config": {"seq_len": 128}}, cells) == 128
    assert main_seq_len({"config": {"seq_len": 32}}, cells) == 64
    assert main_seq_len(None, []) is None
    assert main_seq_len({"config": {"seq_len": 32}}, []) == 32  # nothing measured yet: the configured one


def test_analyze_synthetic_run() -> None:
    a = analyze(make_snapshot())
    assert a.seq_len == SEQ_LEN and a.batch_sizes == (1, 2, 4)
    assert a.variants[0].name == "dense"
    (cross,) = [c for c in a.crossovers if c.variant == "structured@0.5"]
    assert (cross.batch_size, cross.kind) == (2, "starts_faster")
    assert a.cell("nm2:4", 4).status == "error" and a.cell("nm2:4", 2).verdict == "slower"
    assert a.variant("wanda@0.5").fidelity_ok is False
    assert a.variant("iterative@0.8").status == "failed" and a.cell("iterative@0.8", 1) is None
    assert set(a.pareto) == {1, 4}
    front4 = {p.variant for p in a.pareto[4] if p.on_front}
    # at B=4 structured is the fastest, dense the most accurate; nm2:4 has no B=4 measurement
    assert {"structured@0.5", "dense"} <= front4 and "nm2:4" not in {p.variant for p in a.pareto[4]}
    assert "magnitude@0.8" not in front4
