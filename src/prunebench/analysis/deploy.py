"""The "what to deploy" view over (variant, backend) cells: pure functions from plain records.

Three questions a user deploying a model asks, answered from the same cells:

* How fast is each variant on each backend, against dense eager (what everything started from) and against
  dense on the *same* backend (the gain pruning adds to a runtime the user already runs)?
  :func:`deploy_rows`. The second is the ratio of two speedups measured against the same dense-eager
  baseline at the same shape.
* Which (variant, backend) pairs are worth considering at all: the accuracy-vs-speed Pareto front
  (:func:`deploy_front`, the run's dominance and tie rule, :func:`prunebench.analysis.core.pareto_flags`).
* Where does the best choice change with the batch size: :func:`crossovers`.
* Which one pair to deploy at each batch size, under an accuracy budget: :func:`recommend`, the one answer the
  report, ``summary.md``, ``results.json`` and the terminal all open with.

Accuracy of a pair is its own evaluation where the backend changes the numerics, else the variant's eager
accuracy (:func:`accuracy_of`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from prunebench.analysis.accuracy import below_trivial, delta_ci, too_few_predictions
from prunebench.analysis.core import analyze_cells, analyze_variants, main_seq_len, pareto_flags, trusted_faster
from prunebench.analysis.records import CellAnalysis, VariantAnalysis

DENSE = "dense"
EAGER = "eager"

T = TypeVar("T")


@dataclass(frozen=True)
class DeployRow:
    """One (variant, backend, batch size) cell in the deploy view.

    Attributes:
        variant, backend, batch_size, seq_len: the cell's key.
        speedup, ci_low, ci_high: against dense eager (paired), with its CI.
        vs_same_backend: speedup / dense's speedup on the same backend at the same shape (None if unknown).
        latency_ms: the pair's median latency.
        accuracy: the pair's accuracy (None when not evaluated).
    """

    variant: str
    backend: str
    batch_size: int
    seq_len: int
    speedup: float
    ci_low: float | None
    ci_high: float | None
    vs_same_backend: float | None
    latency_ms: float | None
    accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _get(cell: Any, name: str, default: Any = None) -> Any:
    return cell.get(name, default) if isinstance(cell, Mapping) else getattr(cell, name, default)


def accuracy_of(accuracy: Mapping[tuple[str, str], T], variant: str, backend: str, *,
                numerics_changed: bool = False) -> T | None:
    """The pair's own accuracy (a figure or an evaluation record) if evaluated, else the variant's eager one,
    else None. A backend that changes the numerics (``numerics_changed``) never borrows eager's: its accuracy
    is its own evaluation or unknown."""
    if (variant, backend) in accuracy:
        return accuracy[variant, backend]
    return None if numerics_changed else accuracy.get((variant, EAGER))


def deploy_rows(cells: Iterable[Any], accuracy: Mapping[tuple[str, str], float] | None = None,
                numerics_changed: Iterable[str] = ()) -> list[DeployRow]:
    """Rows of the deploy view from measured cells (dicts or records with the cell fields).

    Args:
        cells: cells with ``variant``, ``backend`` (default eager), ``batch_size``, ``seq_len``, ``status``,
            ``speedup`` (against dense eager), ``speedup_ci_low``/``ci_low``, ``speedup_ci_high``/``ci_high``
            and ``latency_ms``. Only ``ok`` cells are used.
        accuracy: ``(variant, backend) -> accuracy``.
        numerics_changed: backends whose accuracy must be their own (no fallback to eager's).
    """
    accuracy = dict(accuracy or {})
    changed = set(numerics_changed)
    ok = [c for c in cells if _get(c, "status", "ok") == "ok" and _get(c, "speedup") is not None]
    dense = {(_get(c, "backend", EAGER), _get(c, "batch_size"), _get(c, "seq_len")): _get(c, "speedup")
             for c in ok if _get(c, "variant") == DENSE}
    rows = []
    for c in ok:
        variant, backend = _get(c, "variant"), _get(c, "backend", EAGER)
        b, s, speed = _get(c, "batch_size"), _get(c, "seq_len"), float(_get(c, "speedup"))
        same = dense.get((backend, b, s))
        acc = accuracy_of(accuracy, variant, backend, numerics_changed=backend in changed)
        rows.append(DeployRow(
            variant=variant, backend=backend, batch_size=b, seq_len=s, speedup=speed,
            ci_low=_get(c, "speedup_ci_low", _get(c, "ci_low")), ci_high=_get(c, "speedup_ci_high", _get(c, "ci_high")),
            vs_same_backend=speed / same if same else None,
            latency_ms=_latency_ms(c), accuracy=acc,
        ))
    rows.sort(key=lambda r: (r.seq_len, r.batch_size, -r.speedup))
    return rows


def _latency_ms(cell: Any) -> float | None:
    value = _get(cell, "latency_ms")
    if value is not None:
        return float(value)
    lat = _get(cell, "latency")
    median = _get(lat, "median") if lat is not None else None
    return float(median) * 1e3 if median is not None else None


def deploy_front(rows: Iterable[DeployRow], batch_size: int) -> list[DeployRow]:
    """Rows at ``batch_size`` on the Pareto front of (higher accuracy, higher speedup against dense eager);
    fastest first, ties by variant and backend.

    Dominance and ties follow :func:`~prunebench.analysis.core.pareto_flags` with accuracies compared as plain
    numbers (the pairs' evaluations are not all paired): equally fast and equally accurate pairs all stay.
    Rows without an accuracy cannot be placed and are left out.
    """
    pts = [r for r in rows if r.batch_size == batch_size and r.accuracy is not None]
    flags = pareto_flags([(str(i), -r.speedup, float(r.accuracy)) for i, r in enumerate(pts)])  # type: ignore[arg-type]
    return sorted((r for r, on in zip(pts, flags, strict=True) if on), key=lambda r: (-r.speedup, r.variant, r.backend))


def best_per_batch(rows: Iterable[DeployRow], *, min_accuracy: float | None = None) -> dict[int, DeployRow]:
    """The fastest (variant, backend) at each batch size, among rows with accuracy >= ``min_accuracy`` if given."""
    best: dict[int, DeployRow] = {}
    for r in rows:
        if min_accuracy is not None and (r.accuracy is None or r.accuracy < min_accuracy):
            continue
        if r.batch_size not in best or r.speedup > best[r.batch_size].speedup:
            best[r.batch_size] = r
    return dict(sorted(best.items()))


def crossovers(rows: Iterable[DeployRow], *, min_accuracy: float | None = None) -> list[dict[str, Any]]:
    """Batch sizes where the fastest (variant, backend) changes, in increasing batch order.

    Each entry: ``{"batch_size", "from", "to"}`` with ``"variant / backend"`` labels: from this batch size on
    (until the next entry) ``to`` is the fastest.
    """
    best = best_per_batch(rows, min_accuracy=min_accuracy)
    out = []
    previous: str | None = None
    for b, r in best.items():
        label = f"{r.variant} / {r.backend}"
        if previous is not None and label != previous:
            out.append({"batch_size": b, "from": previous, "to": label})
        previous = label
    return out


#: The accuracy budget of a recommendation when the run does not name one: percentage points of accuracy a
#: deployed pair may lose against dense eager (``RunConfig.max_accuracy_drop``, ``--max-accuracy-drop``).
DEFAULT_MAX_ACCURACY_DROP = 1.0

#: Outcomes of a :class:`Recommendation`.
WITHIN_BUDGET = "within budget"  # the pair to deploy
CLOSEST = "closest"  # nothing faster met the budget; the faster pair that loses least
KEEP_DENSE = "keep dense"  # nothing measurably faster with a known accuracy: dense eager is the closest

#: Slack of the budget test, so that 0.86 - 0.85 (1.0000000000000009 pp in floats) is within a 1 pp budget.
_BUDGET_SLACK_PP = 1e-9


@dataclass(frozen=True)
class Recommendation:
    """What to deploy at one batch size, and the accuracy budget it was chosen under.

    Attributes:
        batch_size, seq_len: the shape it is about (the run's main seq len).
        max_accuracy_drop: the budget, in percentage points of accuracy against dense eager.
        outcome: :data:`WITHIN_BUDGET` (deploy it), :data:`CLOSEST` (nothing faster met the budget: the faster
            pair that loses least) or :data:`KEEP_DENSE` (nothing measurably faster with a known accuracy).
        variant, backend: the pair named.
        speedup, speedup_ci_low, speedup_ci_high: its paired speedup against dense eager (None for dense eager).
        accuracy_delta, accuracy_delta_ci_low, accuracy_delta_ci_high: its accuracy minus dense eager's
            (fractions), with the paired-bootstrap 95% CI (None when the evaluations cannot be paired, or measure
            nothing: too few predictions, dense below its trivial baseline).
        accuracy_on: the backend whose evaluation gave the accuracy (the pair's own where it changes the
            numerics, else eager).
        faster_pairs: how many pairs counted as faster than dense at this batch size (quiet, CI above the noise
            floor) and had a known accuracy: the field the choice was made from.
    """

    batch_size: int
    seq_len: int
    max_accuracy_drop: float
    outcome: str
    variant: str
    backend: str
    speedup: float | None
    speedup_ci_low: float | None
    speedup_ci_high: float | None
    accuracy_delta: float | None
    accuracy_delta_ci_low: float | None
    accuracy_delta_ci_high: float | None
    accuracy_on: str
    faster_pairs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class _Option:
    """A faster pair with what the choice reads of it."""

    cell: CellAnalysis
    delta: float
    ci: tuple[float, float] | None
    accuracy_on: str

    def within(self, budget: float) -> bool:
        return 100.0 * self.delta >= -budget - _BUDGET_SLACK_PP

    def speed_key(self) -> tuple[float, float]:
        """Faster first; speedups equal at the precision shown (2 decimals) go to the higher CI lower bound."""
        low = self.cell.speedup_ci_low
        return round(self.cell.speedup or 0.0, 2), low if low is not None else float("-inf")


def recommend(snapshot: Mapping[str, Any], max_accuracy_drop: float | None = None) -> list[Recommendation]:
    """The (variant, backend) to deploy at each batch size of the run's main seq len: the fastest pair that
    counts as faster than dense eager and loses at most ``max_accuracy_drop`` percentage points of accuracy.

    ``snapshot`` is one hardware class's store rows, every backend's cells included (callers pass
    ``report.hardware.main_snapshot``); ``max_accuracy_drop`` defaults to the run's stored
    ``config.max_accuracy_drop``, else :data:`DEFAULT_MAX_ACCURACY_DROP`.

    Rules:

    * Faster is :func:`~prunebench.analysis.core.trusted_faster` (status ok, whole CI above the noise floor,
      not contended, on eager not beyond its FLOP-ideal), of a variant that pruned and passed its fidelity check.
    * Accuracy is the pair's own evaluation where its backend changes the numerics, else the variant's eager
      one (:func:`accuracy_of`); a pair without one cannot be placed and is left out. Its change against dense
      eager gets the paired CI of :func:`~prunebench.analysis.accuracy.delta_ci`.
    * The budget is met when the accuracy change (point estimate) is no worse than ``-max_accuracy_drop`` pp;
      its CI is shown beside it. Among pairs that meet it, one with a known CI wins over one without, then the
      higher speedup (to 2 decimals), then the higher speedup CI lower bound, then the name.
    * When none meets it: the faster pair with the smallest accuracy loss (:data:`CLOSEST`), or dense eager
      (:data:`KEEP_DENSE`) when no pair is faster.
    """
    run = snapshot.get("run") or {}
    budget = float(max_accuracy_drop if max_accuracy_drop is not None
                   else (run.get("config") or {}).get("max_accuracy_drop", DEFAULT_MAX_ACCURACY_DROP))
    evaluations = snapshot.get("evaluations") or []
    variants = analyze_variants(snapshot.get("variants") or [], evaluations)
    raw = snapshot.get("cells") or []
    cells = analyze_cells(raw, variants)
    seq_len = main_seq_len(run, raw)
    dense = next((e for e in evaluations if e["variant"] == DENSE), None)
    records = _evaluation_records(evaluations, cells)
    usable = {v.name for v in variants if _deployable(v)}
    out = []
    for b in sorted({c.batch_size for c in cells if c.seq_len == seq_len}):
        faster = [c for c in cells if c.batch_size == b and c.seq_len == seq_len and c.variant in usable
                  and trusted_faster(c)]
        options = [o for c in sorted(faster, key=lambda c: (c.variant, c.backend))
                   if (o := _option(c, records, dense)) is not None]
        out.append(_choose(options, b, int(seq_len or 0), budget))
    return out


def _deployable(variant: VariantAnalysis) -> bool:
    """A variant that pruned and whose fidelity check did not fail (a failed check means the saved model is
    not the one that was evaluated)."""
    return variant.status != "failed" and variant.fidelity_ok is not False


def _evaluation_records(evaluations: Iterable[Mapping[str, Any]],
                        cells: Iterable[CellAnalysis]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """``(variant, backend) -> evaluation record``: each eager evaluation, and each backend evaluation the
    backend stage attached to a pair's cells (``backend_accuracy``, ``backend_evaluation``: the record's
    ``details``)."""
    out: dict[tuple[str, str], Mapping[str, Any]] = {
        (e["variant"], EAGER): e for e in evaluations if e.get("accuracy") is not None}
    for c in cells:
        if c.backend != EAGER and c.extra.get("backend_accuracy") is not None:
            out[c.variant, c.backend] = {"variant": c.variant, "accuracy": c.extra["backend_accuracy"],
                                         "details": c.extra.get("backend_evaluation") or {}}
    return out


def _option(cell: CellAnalysis, records: Mapping[tuple[str, str], Mapping[str, Any]],
            dense: Mapping[str, Any] | None) -> _Option | None:
    """The pair's accuracy change against dense eager with its paired CI, or None when it has no accuracy."""
    changed = bool(cell.extra.get("backend_changes_numerics"))
    record = accuracy_of(records, cell.variant, cell.backend, numerics_changed=changed)
    if record is None or dense is None or dense.get("accuracy") is None:
        return None
    measures_nothing = too_few_predictions(record) or too_few_predictions(dense) or below_trivial(dense)
    ci = None if measures_nothing else delta_ci(record, dense)
    return _Option(cell, float(record["accuracy"]) - float(dense["accuracy"]), ci,
                   cell.backend if (cell.variant, cell.backend) in records else EAGER)


def _choose(options: list[_Option], batch_size: int, seq_len: int, budget: float) -> Recommendation:
    within = [o for o in options if o.within(budget)]
    if within:
        return _recommendation(max(within, key=lambda o: (o.ci is not None, *o.speed_key())), WITHIN_BUDGET,
                               budget, len(options))
    if options:
        best = max(options, key=lambda o: (o.delta, o.ci is not None, *o.speed_key()))
        return _recommendation(best, CLOSEST, budget, len(options))
    return Recommendation(batch_size=batch_size, seq_len=seq_len, max_accuracy_drop=budget, outcome=KEEP_DENSE,
                          variant=DENSE, backend=EAGER, speedup=None, speedup_ci_low=None, speedup_ci_high=None,
                          accuracy_delta=0.0, accuracy_delta_ci_low=0.0, accuracy_delta_ci_high=0.0,
                          accuracy_on=EAGER, faster_pairs=0)


def _recommendation(o: _Option, outcome: str, budget: float, n: int) -> Recommendation:
    c = o.cell
    return Recommendation(batch_size=c.batch_size, seq_len=c.seq_len, max_accuracy_drop=budget, outcome=outcome,
                          variant=c.variant, backend=c.backend, speedup=c.speedup, speedup_ci_low=c.speedup_ci_low,
                          speedup_ci_high=c.speedup_ci_high, accuracy_delta=o.delta,
                          accuracy_delta_ci_low=o.ci[0] if o.ci else None,
                          accuracy_delta_ci_high=o.ci[1] if o.ci else None, accuracy_on=o.accuracy_on,
                          faster_pairs=n)
