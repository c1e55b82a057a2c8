"""The "what to deploy" view over (variant, backend) cells: pure functions from plain records.

Three questions a user deploying a model asks, answered from the same cells:

* How fast is each variant on each backend, against dense eager (what everything started from) and against
  dense on the *same* backend (the gain pruning adds to a runtime the user already runs)?
  :func:`deploy_rows`. The second is the ratio of two speedups measured against the same dense-eager
  baseline at the same shape.
* Which (variant, backend) pairs are worth considering at all: the accuracy-vs-speed Pareto front
  (:func:`deploy_front`, the run's dominance and tie rule, :func:`prunebench.analysis.core.pareto_flags`).
* Where does the best choice change with the batch size: :func:`crossovers`.

Accuracy of a pair is its own evaluation where the backend changes the numerics, else the variant's eager
accuracy (:func:`accuracy_of`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from prunebench.analysis.core import pareto_flags

DENSE = "dense"
EAGER = "eager"


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


def accuracy_of(accuracy: Mapping[tuple[str, str], float], variant: str, backend: str) -> float | None:
    """The pair's own accuracy if evaluated, else the variant's eager accuracy (numerics unchanged), else None."""
    if (variant, backend) in accuracy:
        return accuracy[variant, backend]
    return accuracy.get((variant, EAGER))


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
        acc = accuracy.get((variant, backend)) if backend in changed else accuracy_of(accuracy, variant, backend)
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
