"""A latency model measured on this machine: per-layer tables over head counts and FFN widths + an in-model fit.

Every number comes from prunebench's paired timer (:func:`prunebench.bench.time_paired`), so it is a ratio of
two calls interleaved in one process, which is what survives a noisy shared machine (the measuring is in
:mod:`prunebench.search.measure`; this module holds the model and its arithmetic):

* per distinct layer shape, the layer alone at each point of a head-count axis and an FFN-width axis, paired
  against the same layer at full width; costs are in *units* of layer 0's full-width time. Layers of identical
  shape run identical kernels on identical inputs, so they share one measured table (a 12-layer BERT times
  once). The grid points are the only widths the search may choose, so no prediction interpolates;
* a few whole-model *calibration* configurations (random widths, and ones that separate the head and FFN
  axes: :func:`prunebench.search.measure.axis_configs`) paired against the dense model. A non-negative
  least-squares fit to them gives the in-model factors of each axis' measured cost, a part linear in the
  kept widths, and the intercept (the cost outside the layers).

Predicted latency of widths ``w`` = ``fixed + sum_i (scale * head_cost_i(h_i) + neuron_scale * neuron_cost_i(f_i)
+ head_width_cost * h_i / H_i + neuron_width_cost * f_i / F_i)`` (:class:`LatencyTable`).

*Learned*: fitting ``fixed`` and one ``scale`` through just two whole-model points (dense and all-(1, 1)) left
the model biased (17 of 20 held-out configurations predicted faster than measured): a layer in the model does
not cost what it costs alone (alone, its weights stay in cache), by different amounts for attention and the
FFN, and one noisy end point tilts every prediction. A fit over several configurations averages the noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from prunebench.search._arch import Widths
from prunebench.serde import check_schema_version, reject_unknown

SCHEMA_VERSION = 2
#: The fitted model must predict at least this fraction of dense latency for the smallest widths.
MIN_LATENCY_FRACTION = 0.01


def neuron_choices(d_ff: int, step: int) -> tuple[int, ...]:
    """FFN widths the search may keep: 1, then multiples of ``step`` up to ``d_ff`` (and ``d_ff`` itself)."""
    values = {1, d_ff, *range(step, d_ff + 1, step)}
    return tuple(sorted(v for v in values if 1 <= v <= d_ff))


def default_neuron_step(d_ff: int) -> int:
    """The FFN grid step when none is given: 16 steps across the width (1024 -> 64, 1536 -> 96)."""
    return max(1, -(-d_ff // 16))


def head_choices(n_heads: int, points: int = 16) -> tuple[int, ...]:
    """Head counts measured and searched: every count up to ``points`` heads, else ``points`` spread ones."""
    if n_heads <= points:
        return tuple(range(1, n_heads + 1))
    return tuple(sorted({1, *np.linspace(0, n_heads, points).round().astype(int)[1:].tolist()}))


@dataclass(frozen=True)
class LayerTable:
    """Measured cost of one layer shape alone, in units of layer 0's full-width time.

    The attention and FFN sub-blocks run one after the other on the same input, so a layer's cost is
    separable: ``cost(h, f) = head_cost(h) + neuron_cost(f) - full_cost``, with the head axis measured at
    full FFN width and the FFN axis at all heads (every grid point paired against the full layer).

    Attributes:
        heads: head counts of the head axis (ascending), ``head_cost`` the layer's cost at each.
        neurons: FFN widths of the FFN axis (ascending), ``neuron_cost`` the layer's cost at each.
        full_cost: the layer at full width.
        layers: layer indices this table stands for (all of one shape).
    """

    heads: tuple[int, ...]
    head_cost: tuple[float, ...]
    neurons: tuple[int, ...]
    neuron_cost: tuple[float, ...]
    full_cost: float
    layers: tuple[int, ...]

    def head_at(self, heads: int) -> float:
        """Cost on the head axis at ``heads`` (linear between grid points)."""
        return float(np.interp(heads, self.heads, self.head_cost))

    def neuron_at(self, neurons: int) -> float:
        """Cost on the FFN axis at ``neurons`` (linear between grid points)."""
        return float(np.interp(neurons, self.neurons, self.neuron_cost))

    def predict(self, heads: int, neurons: int) -> float:
        """Cost of the layer alone at (heads, neurons)."""
        return self.head_at(heads) + self.neuron_at(neurons) - self.full_cost

    def choices(self) -> list[tuple[int, int]]:
        """Every measured (heads, neurons) pair: what the search chooses from."""
        return [(h, f) for h in self.heads for f in self.neurons]


@dataclass(frozen=True)
class LatencyTable:
    """The latency model of one model at one shape and backend on this machine.

    A layer at (h, f) costs, in the model, ``scale * head_cost(h) + neuron_scale * neuron_cost(f) +
    head_width_cost * h / H + neuron_width_cost * f / F`` units: the measured shape of each axis alone, scaled,
    plus a part linear in the kept fraction of its weights (what a layer pays in the model and not alone: its
    weights stream from memory instead of sitting in a cache that one layer called over and over keeps warm).

    Attributes:
        batch_size, seq_len, backend, threads: the conditions it was measured under.
        unit_seconds: median time of layer 0 at full width (what one unit is).
        tables: one :class:`LayerTable` per distinct layer shape.
        fixed: intercept of the fit, in units (the cost outside the layers, less what the factors move into
            it: ``head_cost`` and ``neuron_cost`` both include the layer's own overhead).
        scale, neuron_scale: in-model factors on the head and FFN axis' costs alone (1.0 = as alone).
        full: the model's widths when measured.
        head_width_cost, neuron_width_cost: in-model cost (units) of a layer's full head set / FFN linear in the
            kept fraction, beyond the scaled tables.
        calibration: the fit's data: per configuration ``{"widths", "measured", "predicted"}`` (speedups).
        measure_seconds: wall time of the measurement.
    """

    batch_size: int
    seq_len: int
    backend: str
    threads: int
    unit_seconds: float
    tables: tuple[LayerTable, ...]
    fixed: float
    scale: float
    neuron_scale: float
    full: Widths
    head_width_cost: float = 0.0
    neuron_width_cost: float = 0.0
    calibration: tuple[dict[str, Any], ...] = ()
    measure_seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def table_of(self, layer: int) -> LayerTable:
        """The :class:`LayerTable` that prices ``layer``."""
        for t in self.tables:
            if layer in t.layers:
                return t
        raise ValueError(f"layer {layer} is not in this latency table (layers 0..{len(self.full) - 1})")

    @property
    def coefficients(self) -> np.ndarray:
        """[4] the in-model coefficients, in the order of :meth:`layer_features`."""
        return np.array([self.scale, self.neuron_scale, self.head_width_cost, self.neuron_width_cost])

    def layer_features(self, layer: int, heads: int, neurons: int) -> np.ndarray:
        """[4] what a layer at (heads, neurons) is priced by: head-axis cost, FFN-axis cost (alone), kept head
        fraction, kept neuron fraction."""
        t, (H, F) = self.table_of(layer), self.full[layer]
        return np.array([t.head_at(heads), t.neuron_at(neurons), heads / H, neurons / F])

    def features(self, widths: Widths) -> np.ndarray:
        """[4] the sum of :meth:`layer_features` over the layers of ``widths``: the fit's features."""
        if len(widths) != len(self.full):
            raise ValueError(f"widths give {len(widths)} layers, the table has {len(self.full)}")
        return np.sum([self.layer_features(i, h, f) for i, (h, f) in enumerate(widths)], axis=0)

    def latency(self, widths: Widths) -> float:
        """Predicted latency of the model at ``widths``, in units."""
        return self.fixed + float(self.coefficients @ self.features(widths))

    def layer_cost(self, layer: int, heads: int, neurons: int) -> float:
        """Predicted in-model cost of one layer at (heads, neurons), in units (``latency`` = fixed + their sum)."""
        return float(self.coefficients @ self.layer_features(layer, heads, neurons))

    def speedup(self, widths: Widths) -> float:
        """Predicted speedup of ``widths`` over the full model."""
        return self.latency(self.full) / self.latency(widths)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyTable:
        """Inverse of :meth:`to_dict`."""
        reject_unknown(data, cls.__dataclass_fields__, "latency table keys", list_valid=True)
        version = data.get("schema_version")
        check_schema_version(version, SCHEMA_VERSION, "latency table")
        tables = tuple(LayerTable(**{k: tuple(v) if isinstance(v, list) else v for k, v in t.items()})
                       for t in data["tables"])
        data = {**data, "tables": tables, "full": tuple(tuple(w) for w in data["full"]),
                "calibration": tuple(data.get("calibration", ()))}
        if version == 1:  # one scale on (head + neuron - full) per layer: the same model with equal factors
            full_sum = sum(t.full_cost * len(t.layers) for t in tables)
            data.update(neuron_scale=data["scale"], fixed=data["fixed"] - data["scale"] * full_sum,
                        schema_version=SCHEMA_VERSION)
        return cls(**data)


def nonnegative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin ||x c - y|| subject to c >= 0, exactly, for the few columns here (every support tried).

    The optimum is the unconstrained least squares on its own support, so the best non-negative solution
    among all supports is it.
    """
    n = x.shape[1]
    best, best_res = np.zeros(n), float(y @ y)
    for support in itertools.product((False, True), repeat=n):
        idx = [j for j in range(n) if support[j]]
        if not idx:
            continue
        sol = np.linalg.lstsq(x[:, idx], y, rcond=None)[0]
        if (sol < 0).any():
            continue
        coef = np.zeros(n)
        coef[idx] = sol
        res = float(np.sum((x @ coef - y) ** 2))
        if res < best_res:
            best, best_res = coef, res
    return best


def fit_in_model(draft: LatencyTable, widths: Sequence[Widths], speedups: Sequence[float],
                 dense_units: float) -> LatencyTable:
    """``draft`` with ``fixed`` and the four in-model coefficients fitted to measured whole-model speedups.

    With ``c`` the dense model's latency in units (``dense_units``) and ``d_k`` configuration k's change of
    :meth:`LatencyTable.features` from dense, the model says ``1 / speedup_k - 1 = d_k . beta`` with
    ``beta = coefficients / c``: linear least squares with ``beta >= 0`` (no layer may get slower by losing
    width) on the latency ratio, unweighted. *Learned*: weighting each residual by its speedup (so it is a
    relative error of the predicted speedup) let the all-(1, 1) configuration (5-7x) dominate the fit, and
    MiniLM's held-out check came out 5% over-predicted across the board; the targets live at 1.5-3x.
    A fit that predicts no positive latency for the smallest widths drops the linear terms;
    when noise leaves nothing usable (a tiny model), the layers cost what they cost alone.

    Raises:
        ValueError: no configuration, or lengths that differ.
    """
    if not widths or len(widths) != len(speedups):
        raise ValueError(f"the in-model fit needs measured configurations; got {len(widths)} widths and "
                         f"{len(speedups)} speedups")
    base = draft.features(draft.full)  # [4]
    x = np.array([draft.features(w) - base for w in widths])  # [K, 4]
    r = np.asarray(speedups, dtype=float)  # [K]
    smallest = draft.features(tuple((t.heads[0], t.neurons[0]) for t in map(draft.table_of, range(len(draft.full)))))
    for terms in ((0, 1, 2, 3), (0, 1)):  # all four terms; the scaled tables alone; else as alone
        beta = np.zeros(4)
        beta[list(terms)] = nonnegative_lstsq(x[:, terms], 1.0 / r - 1.0)
        # Noise can fit a model that predicts a non-positive latency for the smallest widths: refuse it.
        if beta.any() and 1.0 + (smallest - base) @ beta > MIN_LATENCY_FRACTION:
            break
    else:
        beta = np.array([1.0, 1.0, 0.0, 0.0]) / dense_units
    coef = beta * dense_units  # [4] in units
    fitted = LatencyTable(**{**draft.__dict__, "scale": float(coef[0]), "neuron_scale": float(coef[1]),
                             "head_width_cost": float(coef[2]), "neuron_width_cost": float(coef[3]),
                             "fixed": dense_units - float(coef @ base)})
    rows = tuple({"widths": [list(w) for w in ws], "measured": float(m), "predicted": fitted.speedup(ws)}
                 for ws, m in zip(widths, speedups, strict=True))
    return LatencyTable(**{**fitted.__dict__, "calibration": rows})


def monotone(values: tuple[float, ...]) -> tuple[float, ...]:
    """Least-squares non-decreasing fit (pool adjacent violators): a layer never gets slower by losing width,
    so a dip between grid points is timing noise, and pooling it with its neighbours averages that noise."""
    blocks: list[list[float]] = []  # [sum, count] per pooled block
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    return tuple(s / c for s, c in blocks for _ in range(int(c)))

