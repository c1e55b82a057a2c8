"""The computations of the analysis: pure functions from the store's plain rows to the records."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prunebench.analysis.accuracy import (
    TOO_FEW,
    UNFIT,
    accuracy_ci,
    accuracy_verdict,
    below_trivial,
    delta_ci,
    indistinct_from_trivial,
    measurably_better,
    n_predictions,
    too_few_predictions,
)
from prunebench.analysis.records import Analysis, CellAnalysis, Crossover, ParetoPoint, VariantAnalysis
from prunebench.results.cell import DEFAULT_BACKEND, CellRecord, flop_ideal, normalize_cell_row

#: Name of the dense baseline variant in every run.
BASELINE = "dense"

#: Verdicts of a cell against dense (see the module docstring).
VERDICTS = ("faster", "same", "slower", "n/a")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return float(numerator) / float(denominator)


def speedup_verdict(ci_low: float | None, ci_high: float | None, margin: float = 0.0) -> str:
    """``faster`` if ``ci_low > 1 + margin``, ``slower`` if ``ci_high < 1 - margin``, ``same`` otherwise,
    ``n/a`` without a CI. ``margin`` is the noise floor (:func:`noise_margin`); 0 judges against 1 alone."""
    if ci_low is None or ci_high is None:
        return "n/a"
    if ci_low > 1.0 + margin:
        return "faster"
    if ci_high < 1.0 - margin:
        return "slower"
    return "same"


def beyond_ideal(ci_low: float | None, ideal: float | None, margin: float = 0.0) -> bool:
    """Whether a speedup's whole CI lies above its FLOP-ideal by more than the noise floor: faster than a
    perfect kernel could run the FLOPs left. Either the timing is at fault (a competitor slowed one side of
    the pairs), or the FLOP count misses a cost the pruning removed (memory traffic, a model that now fits in
    cache, fixed costs per call)."""
    if ci_low is None or ideal is None:
        return False
    return ci_low > ideal * (1.0 + margin)


def trusted_faster(cell: CellAnalysis) -> bool:
    """Whether a cell may be named as faster than dense for a decision (what to deploy): measured (status
    ``ok``), its whole CI above the noise floor (``verdict == "faster"``), timed on a quiet machine (not
    ``contended``; an ``unmeasured`` cell is not ``ok``) and, on eager, not beyond its FLOP-ideal.

    The FLOP-ideal bounds eager only: another runtime changes the cost of each FLOP (fused kernels, int8, no
    Python per call), so a dense ONNX Runtime cell above 1x is a real gain, not a timing fault.
    """
    return (cell.ok and cell.verdict == "faster" and not cell.contended
            and not (cell.backend == DEFAULT_BACKEND and cell.beyond_ideal))


def busy_cells(cells: Iterable[CellRecord]) -> tuple[int, int]:
    """(cells contended or unmeasured, cells timed): what the busy machine touched, of all it timed."""
    timed = [c for c in cells if c.ok or c.unmeasured]
    return sum(1 for c in timed if c.unmeasured or c.contended), len(timed)


def mostly_busy(cells: Iterable[CellRecord]) -> bool:
    """Whether most timed cells were contended or unmeasured (the verdict opens with it; ``--strict`` fails)."""
    busy, timed = busy_cells(cells)
    return timed > 0 and busy * 2 > timed


def noise_margin(twin: CellRecord | None) -> float:
    """The noise band of a shape: how far from 1 the dense-vs-identical-twin cell reaches (point or CI end).

    A variant is judged faster or slower only when its whole CI lies outside ``1 +- margin``. The twin's own
    CI lies inside its band by construction, so an identical copy is never called faster or slower.
    """
    if twin is None or not twin.ok or twin.speedup_ci_low is None or twin.speedup_ci_high is None:
        return 0.0
    ends = [twin.speedup_ci_low, twin.speedup_ci_high, twin.speedup if twin.speedup is not None else 1.0]
    return max(abs(x - 1.0) for x in ends)


def analyze_variants(
    variants: Sequence[Mapping[str, Any]], evaluations: Sequence[Mapping[str, Any]]
) -> list[VariantAnalysis]:
    """Per-variant figures with ratios and accuracy deltas against the ``dense`` variant (None where absent)."""
    evals = {e["variant"]: e for e in evaluations}
    dense = next((v for v in variants if v["name"] == BASELINE), {})
    dense_eval = evals.get(BASELINE)
    dense_acc = (dense_eval or {}).get("accuracy")
    out = []
    for v in variants:
        ev = evals.get(v["name"], {})
        fidelity = v.get("fidelity") or {}
        acc = ev.get("accuracy")
        ok = fidelity.get("ok")
        ci = delta_ci(ev, dense_eval) if v["name"] != BASELINE and acc is not None else None
        out.append(
            VariantAnalysis(
                name=v["name"],
                method=v.get("method"),
                requested_sparsity=v.get("requested_sparsity"),
                measured_sparsity=v.get("measured_sparsity"),
                materialization=v.get("materialization"),
                status=v.get("status"),
                error=v.get("error"),
                params=v.get("params"),
                params_ratio=ratio(v.get("params"), dense.get("params")),
                nonzero_params=v.get("nonzero_params"),
                nonzero_ratio=ratio(v.get("nonzero_params"), dense.get("nonzero_params")),
                disk_bytes=v.get("disk_bytes"),
                disk_ratio=ratio(v.get("disk_bytes"), dense.get("disk_bytes")),
                macs=v.get("macs"),
                effective_macs=v.get("effective_macs"),
                # Against the dense model's MACs (a shrunk variant's own ``macs`` already counts fewer).
                flop_ideal_speedup=flop_ideal(dense.get("macs") if dense else v.get("macs"), v.get("effective_macs")),
                accuracy=acc,
                accuracy_delta=None if acc is None or dense_acc is None else acc - dense_acc,
                metric_name=ev.get("metric_name"),
                agreement=ev.get("agreement"),
                kl=ev.get("kl"),
                cosine=ev.get("cosine"),
                trivial_accuracy=ev.get("trivial_accuracy"),
                fidelity_max_abs_diff=fidelity.get("max_abs_diff"),
                fidelity_ok=None if ok is None else bool(ok),
                accuracy_delta_ci_low=ci[0] if ci else None,
                accuracy_delta_ci_high=ci[1] if ci else None,
                accuracy_verdict=_verdict(ci, ev, dense_eval) if v["name"] != BASELINE and acc is not None else "n/a",
                n_predictions=n_predictions(ev),
                step_problems=_step_problems(v, evaluated=bool(ev)),
            )
        )
    return out


def _step_problems(variant: Mapping[str, Any], *, evaluated: bool) -> tuple[str, ...]:
    """What went wrong in a stored variant's steps (recovery, refit, calibration) and, while it has no stored
    evaluation, why its evaluation failed."""
    details = variant.get("details") or {}
    out = [str(p) for p in details.get("step_problems") or ()]
    if details.get("evaluation_error") and not evaluated:
        out.append(f"evaluation failed: {details['evaluation_error']}")
    return tuple(out)


def _verdict(ci: tuple[float, float] | None, evaluation: Mapping[str, Any], dense: Mapping[str, Any] | None) -> str:
    """A variant's accuracy verdict: none where the evaluation measures nothing (too few predictions, or a dense
    model below its trivial baseline), else what the paired CI says."""
    if too_few_predictions(evaluation) or too_few_predictions(dense):
        return TOO_FEW
    if below_trivial(dense):
        return UNFIT
    return accuracy_verdict(*ci) if ci else "n/a"


#: Figures a failed cell must not carry, whatever its producer left in it.
_FIGURES = (
    "latency_ms", "latency_p90_ms", "latency_cv", "baseline_latency_ms", "speedup", "speedup_ci_low",
    "speedup_ci_high", "throughput_samples_s", "throughput_tokens_s", "peak_memory_bytes",
)


def _baseline_backend(r: CellRecord) -> str:
    return str(r.extra.get("baseline_backend") or r.backend)


def analyze_cells(cells: Sequence[Mapping[str, Any]], variants: Sequence[VariantAnalysis] = ()) -> list[CellAnalysis]:
    """Per-cell comparisons with dense, sorted by variant order, seq len, then batch size.

    Each row is read as the one :class:`~prunebench.results.cell.CellRecord`; verdicts are judged against
    the noise floor of the same shape and backend (the dense-vs-twin cell).
    """
    by_name = {v.name: v for v in variants}
    order = {v.name: i for i, v in enumerate(variants)}
    records = [CellRecord.from_row(normalize_cell_row({**c, "status": c.get("status") or "error"})) for c in cells]
    # The twin is dense timed against dense on the same backend; a backend cell is timed against dense *eager*
    # (``baseline_backend``), so its noise floor is eager's twin, never dense-on-that-backend vs dense eager.
    twins = {(r.backend, r.batch_size, r.seq_len): r for r in records
             if r.variant == BASELINE and r.ok and _baseline_backend(r) == r.backend}
    out = []
    for r in records:
        if not r.ok:
            r = dataclasses.replace(r, **dict.fromkeys(_FIGURES))
        v = by_name.get(r.variant)
        twin = twins.get((_baseline_backend(r), r.batch_size, r.seq_len))
        margin = noise_margin(twin)
        ideal = r.flop_ideal_speedup if r.flop_ideal_speedup is not None else (v.flop_ideal_speedup if v else None)
        fields = {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
        fields["flop_ideal_speedup"] = ideal
        out.append(
            CellAnalysis(
                **fields,
                method=v.method if v else None,
                verdict=speedup_verdict(r.speedup_ci_low, r.speedup_ci_high, margin) if r.ok else "n/a",
                noise_margin=margin,
                realized_over_ideal=ratio(r.speedup, ideal),
                peak_memory_ratio=ratio(r.peak_memory_bytes, twin.peak_memory_bytes if twin else None),
                beyond_ideal=r.ok and beyond_ideal(r.speedup_ci_low, ideal, margin),
            )
        )
    out.sort(key=lambda a: (order.get(a.variant, len(order)), a.variant, a.backend, a.seq_len, a.batch_size))
    return out


def find_crossovers(cells: Iterable[CellAnalysis]) -> list[Crossover]:
    """Batch sizes where a variant's verdict turns to, or away from, ``faster``.

    Only measured cells count (errors and cells without a CI are skipped), per variant and seq len in batch-size
    order. Several crossovers per variant are possible and all are returned; none means the verdict never
    changed between faster and not-faster over the measured batch sizes.
    """
    series: dict[tuple[str, int], list[CellAnalysis]] = {}
    for c in cells:
        if c.verdict != "n/a" and c.variant != BASELINE:
            series.setdefault((c.variant, c.seq_len), []).append(c)
    out = []
    for (variant, seq_len), items in series.items():
        items.sort(key=lambda c: c.batch_size)
        for prev, cur in itertools.pairwise(items):
            if (prev.verdict == "faster") != (cur.verdict == "faster"):
                kind = "starts_faster" if cur.verdict == "faster" else "stops_faster"
                out.append(
                    Crossover(variant, seq_len, cur.batch_size, prev.batch_size, kind, prev.verdict, cur.verdict)
                )
    return out


def pareto_flags(
    points: Sequence[tuple[str, float, float]], better: Callable[[str, str], bool] | None = None
) -> list[bool]:
    """Whether each ``(name, cost, accuracy)`` point is on the accuracy-vs-cost Pareto front (lower cost is
    better: latency, or the inverse of a speedup); the one dominance rule of the run's and the deploy view's fronts.

    A point is dominated when another costs at most as much and is not measurably less accurate, and costs
    strictly less or is measurably more accurate. ``better(q, p)`` says whether q is *measurably* more accurate
    than p (see :func:`prunebench.analysis.accuracy.measurably_better`); accuracies whose difference is not
    measurable then count as equal, so a slower point is not kept on the front by a difference inside the noise.
    Without it, accuracies are compared as plain numbers.

    Tie rule: points of equal cost whose accuracies count as equal dominate neither each other; all of them stay
    on the front (none is worse, so the front does not pick one). Points of one name (a variant timed on two
    node classes) never compete with each other, only with other names.
    """
    acc_of = {name: acc for name, _, acc in points}
    if better is None:
        def better(q: str, p: str) -> bool:
            return acc_of[q] > acc_of[p]

    return [
        not any(
            cost2 <= cost and not better(name, other) and (cost2 < cost or better(other, name))
            for other, cost2, _ in points
            if other != name
        )
        for name, cost, _ in points
    ]


def pareto_front(
    points: Iterable[tuple[str, float, float]], better: Callable[[str, str], bool] | None = None
) -> list[ParetoPoint]:
    """Each ``(name, latency_ms, accuracy)`` point marked on the front or not (:func:`pareto_flags`, ``better``
    as there); returned sorted by latency, then name."""
    pts = list(points)
    out = [ParetoPoint(name, float(lat), float(acc), on) for (name, lat, acc), on in zip(pts, pareto_flags(pts, better),
                                                                                          strict=True)]
    out.sort(key=lambda p: (p.latency_ms, p.variant))
    return out


def pareto_at(
    variants: Sequence[VariantAnalysis], cells: Sequence[CellAnalysis], batch_size: int, seq_len: int | None,
    evaluations: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[ParetoPoint]:
    """The accuracy-vs-latency Pareto points at one batch size, over variants that did not fail and have both;
    with ``evaluations`` (name -> stored evaluation) accuracy differences count only where measurable."""
    accuracy = {v.name: v.accuracy for v in variants if v.status != "failed" and v.accuracy is not None}
    points = [
        (c.variant, c.latency_ms, accuracy[c.variant])
        for c in cells
        if c.batch_size == batch_size and c.seq_len == seq_len and c.latency_ms is not None and c.variant in accuracy
        and c.backend == DEFAULT_BACKEND
    ]
    return pareto_front(points, measurably_better(evaluations, accuracy) if evaluations else None)


def main_seq_len(run: Mapping[str, Any] | None, cells: Sequence[Mapping[str, Any]]) -> int | None:
    """The seq len the summary is about: the run config's ``seq_len`` if measured (or if nothing was measured
    yet), else the smallest measured one."""
    measured = sorted({int(c["seq_len"]) for c in cells})
    wanted = ((run or {}).get("config") or {}).get("seq_len")
    if wanted is not None and (int(wanted) in measured or not measured):
        return int(wanted)
    return measured[0] if measured else None


def analyze(snapshot: Mapping[str, Any]) -> Analysis:
    """The full analysis of a store snapshot (``{run, variants, evaluations, cells}``)."""
    variants = analyze_variants(snapshot.get("variants", []), snapshot.get("evaluations", []))
    raw_cells = snapshot.get("cells", [])
    cells = analyze_cells(raw_cells, variants)
    seq_len = main_seq_len(snapshot.get("run"), raw_cells)
    batch_sizes = tuple(sorted({c.batch_size for c in cells if c.seq_len == seq_len}))
    evals = {e["variant"]: e for e in snapshot.get("evaluations", [])}
    pareto = {
        b: tuple(pareto_at(variants, cells, b, seq_len, evals)) for b in sorted({*batch_sizes[:1], *batch_sizes[-1:]})
    }
    return Analysis(
        seq_len=seq_len,
        batch_sizes=batch_sizes,
        variants=tuple(variants),
        cells=tuple(cells),
        crossovers=tuple(find_crossovers(cells)),
        pareto=pareto,
        dense_accuracy_ci=accuracy_ci(evals.get(BASELINE)),
        accuracy_uninformative=indistinct_from_trivial(evals.get(BASELINE)),
        dense_predictions=n_predictions(evals.get(BASELINE)),
        task_unfit=below_trivial(evals.get(BASELINE)),
    )
