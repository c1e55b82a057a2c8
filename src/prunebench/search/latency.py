"""A latency model measured on this machine: per-layer tables over head counts and FFN widths + an in-model fit.

Every number comes from prunebench's paired timer (:func:`prunebench.bench.time_paired`), so it is a ratio of
two calls interleaved in one process, which is what survives a noisy shared machine (the measuring is in
:mod:`prunebench.search.measure`; this module holds the model and its arithmetic):

* per distinct layer shape, the layer alone at each point of a head-count axis and an FFN-width axis, paired
  against the same layer at full width; costs are in *units* of layer 0's full-width time. Layers of identical
  shape run identical kernels on identical inputs, so they share one measured table (a 12-layer BERT times
  once). The grid points are the only widths the search may choose, so no prediction interpolates;
* a few whole-model *calibration* configurations (random widths, and every layer at one head and one neuron)
  paired against the dense model. A least-squares fit to them gives one in-model factor for the attention
  axis and one for the FFN axis, and the intercept (the cost outside the layers).

Predicted latency of widths ``w`` = ``fixed + sum_i (scale * head_cost_i(h_i) + neuron_scale * neuron_cost_i(f_i))``.

*Learned*: fitting ``fixed`` and one ``scale`` through just two whole-model points (dense and all-(1, 1)) left
the model biased (17 of 20 held-out configurations predicted faster than measured): a layer in the model does
not cost what it costs alone, by a different factor for attention than for the FFN, and one noisy end point
tilts every prediction. A fit over several configurations averages the noise and has both factors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from prunebench.search._arch import Widths
from prunebench.serde import check_schema_version, reject_unknown

SCHEMA_VERSION = 2


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

    Attributes:
        batch_size, seq_len, backend, threads: the conditions it was measured under.
        unit_seconds: median time of layer 0 at full width (what one unit is).
        tables: one :class:`LayerTable` per distinct layer shape.
        fixed: intercept of the fit, in units (the cost outside the layers, less what the two factors
            move into it: ``head_cost`` and ``neuron_cost`` both include the layer's own overhead).
        scale: in-model factor on the head axis' costs (1.0 = as alone).
        neuron_scale: in-model factor on the FFN axis' costs.
        full: the model's widths when measured.
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
    calibration: tuple[dict[str, Any], ...] = ()
    measure_seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def table_of(self, layer: int) -> LayerTable:
        """The :class:`LayerTable` that prices ``layer``."""
        for t in self.tables:
            if layer in t.layers:
                return t
        raise ValueError(f"layer {layer} is not in this latency table (layers 0..{len(self.full) - 1})")

    def axis_sums(self, widths: Widths) -> tuple[float, float]:
        """(sum of head-axis costs, sum of FFN-axis costs) of ``widths``, layers alone: the fit's features."""
        if len(widths) != len(self.full):
            raise ValueError(f"widths give {len(widths)} layers, the table has {len(self.full)}")
        tabs = [self.table_of(i) for i in range(len(widths))]
        return (sum(t.head_at(h) for t, (h, _) in zip(tabs, widths, strict=True)),
                sum(t.neuron_at(f) for t, (_, f) in zip(tabs, widths, strict=True)))

    def latency(self, widths: Widths) -> float:
        """Predicted latency of the model at ``widths``, in units."""
        heads, neurons = self.axis_sums(widths)
        return self.fixed + self.scale * heads + self.neuron_scale * neurons

    def layer_cost(self, layer: int, heads: int, neurons: int) -> float:
        """Predicted in-model cost of one layer at (heads, neurons), in units (``latency`` = fixed + their sum)."""
        t = self.table_of(layer)
        return self.scale * t.head_at(heads) + self.neuron_scale * t.neuron_at(neurons)

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


def fit_in_model(draft: LatencyTable, widths: Sequence[Widths], speedups: Sequence[float],
                 dense_units: float) -> LatencyTable:
    """``draft`` with ``fixed``, ``scale`` and ``neuron_scale`` fitted to measured whole-model speedups.

    With ``c`` the dense model's latency in units (``dense_units``) and ``dH_k``, ``dF_k`` configuration k's
    change of the head- and FFN-axis sums from dense, the model says ``1 / speedup_k - 1 = a dH_k + b dF_k``
    with ``a = scale / c``, ``b = neuron_scale / c``: linear least squares, weighted by ``speedup_k`` so each
    residual is a relative error of the predicted speedup (what the check reports). Factors that come out
    non-positive (noise swamping a tiny model) fall back to one common factor, then to 1 (as alone).

    Raises:
        ValueError: no configuration, or lengths that differ.
    """
    if not widths or len(widths) != len(speedups):
        raise ValueError(f"the in-model fit needs measured configurations; got {len(widths)} widths and "
                         f"{len(speedups)} speedups")
    h0, f0 = draft.axis_sums(draft.full)
    x = np.array([[h - h0, f - f0] for h, f in (draft.axis_sums(w) for w in widths)])  # [K, 2]
    r = np.asarray(speedups, dtype=float)  # [K]
    y, wt = 1.0 / r - 1.0, r  # [K]
    coef = np.linalg.lstsq(x * wt[:, None], y * wt, rcond=None)[0]  # [2]
    if not (coef > 0).all():
        common = x.sum(1) * wt  # [K]: one factor on both axes
        denom = float(common @ common)
        a = float(common @ (y * wt)) / denom if denom > 0 else 0.0
        coef = np.array([a, a]) if a > 0 else np.full(2, 1.0 / dense_units)
    scale, neuron_scale = (float(c) * dense_units for c in coef)
    fitted = LatencyTable(**{**draft.__dict__, "scale": scale, "neuron_scale": neuron_scale,
                             "fixed": dense_units - scale * h0 - neuron_scale * f0})
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

