"""A latency model measured on this machine: per-layer tables over head counts and FFN widths + fixed cost.

Every number comes from prunebench's paired timer (:func:`prunebench.bench.time_paired`), so it is a ratio of
two calls interleaved in one process, which is what survives a noisy shared machine:

* per distinct layer shape, the layer alone at each point of a head-count axis and an FFN-width axis, paired
  against the same layer at full width; costs are in *units* of layer 0's full-width time. Layers of identical shape run
  identical kernels on identical inputs, so they share one measured table (a 12-layer BERT times once);
* the whole model (the call a user times) paired against layer 0, and against the model with every layer
  at one head and one neuron. These two ratios fix the cost outside the layers (embeddings, final norm,
  Python) and one in-model scale factor (a layer in the model runs with colder caches than alone).

Predicted latency of widths ``w`` = ``fixed + scale * sum_i table_i(w_i)`` (linear between grid points).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prunebench.bench.inputs import make_inputs
from prunebench.bench.settings import BenchSettings
from prunebench.bench.timing import time_paired
from prunebench.search._arch import Widths, adapter_of, first_k_copy, full_widths
from prunebench.serde import check_schema_version, reject_unknown

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Budget of one grid point: a layer call takes milliseconds, so ~0.5 s gives dozens of ABBA pairs.
TABLE_TIMING = BenchSettings(warmup=2, min_time=0.5, min_pairs=8, max_time=2.5, target_ci=0.015,
                             measure_memory=False)


def neuron_choices(d_ff: int, step: int) -> tuple[int, ...]:
    """FFN widths the search may keep: 1, then multiples of ``step`` up to ``d_ff`` (and ``d_ff`` itself)."""
    values = {1, d_ff, *range(step, d_ff + 1, step)}
    return tuple(sorted(v for v in values if 1 <= v <= d_ff))


def _grid(full: int, points: int) -> tuple[int, ...]:
    """``points`` widths from 1 to ``full`` (all of them when ``full`` is small)."""
    if full <= points:
        return tuple(range(1, full + 1))
    return tuple(sorted({1, *np.linspace(0, full, points).round().astype(int)[1:].tolist()}))


@dataclass(frozen=True)
class LayerTable:
    """Measured cost of one layer shape, in units of layer 0's full-width time.

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

    def predict(self, heads: int, neurons: int) -> float:
        """Cost at (heads, neurons), linear between grid points of each axis."""
        h = float(np.interp(heads, self.heads, self.head_cost))
        f = float(np.interp(neurons, self.neurons, self.neuron_cost))
        return h + f - self.full_cost


@dataclass(frozen=True)
class LatencyTable:
    """The latency model of one model at one shape and backend on this machine.

    Attributes:
        batch_size, seq_len, backend, threads: the conditions it was measured under.
        unit_seconds: median time of layer 0 at full width (what one unit is).
        tables: one :class:`LayerTable` per distinct layer shape.
        fixed: cost outside the layers, in units.
        scale: in-model factor on layer costs (1.0 = a layer costs in the model what it costs alone).
        full: the model's widths when measured.
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
    full: Widths
    measure_seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def _table_of(self, layer: int) -> LayerTable:
        for t in self.tables:
            if layer in t.layers:
                return t
        raise ValueError(f"layer {layer} is not in this latency table (layers 0..{len(self.full) - 1})")

    def latency(self, widths: Widths) -> float:
        """Predicted latency of the model at ``widths``, in units."""
        if len(widths) != len(self.full):
            raise ValueError(f"widths give {len(widths)} layers, the table has {len(self.full)}")
        return self.fixed + self.scale * sum(self._table_of(i).predict(h, f) for i, (h, f) in enumerate(widths))

    def layer_cost(self, layer: int, heads: int, neurons: int) -> float:
        """Predicted in-model cost of one layer at (heads, neurons), in units."""
        return self.scale * self._table_of(layer).predict(heads, neurons)

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
        check_schema_version(data.get("schema_version"), SCHEMA_VERSION, "latency table")
        tables = tuple(LayerTable(**{k: tuple(v) if isinstance(v, list) else v for k, v in t.items()})
                       for t in data["tables"])
        return cls(**{**data, "tables": tables, "full": tuple(tuple(w) for w in data["full"])})


def _ratio(a: Any, b: Any, timing: BenchSettings) -> float:
    """Median of paired ratios time(a) / time(b)."""
    return time_paired(a, b, **timing.compare_kwargs()).speedup


def _shape(adapter: Any, layer: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(lin.weight.shape) for lin in adapter.layer_linears(layer).values())


def model_call(model: nn.Module, batch_size: int, seq_len: int, seed: int = 0) -> Any:
    """The timed forward of ``model`` on seeded unpadded inputs (what verification and the table time)."""
    adapter = adapter_of(model)
    batch = make_inputs(adapter.vocab_size, batch_size, seq_len, seed=seed, device=next(model.parameters()).device)
    return adapter.forward_call(batch)


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


def widths_at(full: Widths, layer: int, widths: tuple[int, int]) -> Widths:
    """``full`` with ``layer`` set to ``widths``."""
    return tuple(widths if i == layer else w for i, w in enumerate(full))


def _cost_at(widths: Widths, *, model: nn.Module, layer: int, ref: Any, full_cost: float, batch_size: int,
             seq_len: int, seed: int, timing: BenchSettings) -> float:
    """Cost (units) of ``layer`` at ``widths[layer]``: its full cost over the paired ratio full / small."""
    if widths[layer] == full_widths(adapter_of(model))[layer]:
        return full_cost
    small = adapter_of(first_k_copy(model, widths))
    return full_cost / _ratio(ref, small.layer_call(layer, batch_size, seq_len, seed), timing)


@torch.inference_mode()
def measure_latency_table(
    model: nn.Module,
    batch_size: int,
    seq_len: int,
    *,
    head_points: int = 16,
    neuron_points: int = 9,
    timing: BenchSettings = TABLE_TIMING,
    backend: str = "eager",
    seed: int = 0,
) -> LatencyTable:
    """Measure the latency model of ``model`` (eval mode) at ``[batch_size, seq_len]``.

    Args:
        model: the dense model (not modified).
        batch_size, seq_len: the shape every timing uses.
        head_points, neuron_points: grid points per axis (every head count when there are few heads).
        timing: paired-timing budget of each point.
        backend: recorded with the table (only ``eager`` is timed today).
        seed: seed of the inputs.
    """
    start = time.perf_counter()
    model.eval()
    adapter = adapter_of(model)
    full = full_widths(adapter)
    by_shape: dict[tuple[tuple[int, ...], ...], list[int]] = {}
    for i in range(adapter.n_layers):
        by_shape.setdefault(_shape(adapter, i), []).append(i)
    unit_call = adapter.layer_call(0, batch_size, seq_len, seed)
    tables = []
    for layers in by_shape.values():
        j = layers[0]
        H, F = full[j]
        ref = adapter.layer_call(j, batch_size, seq_len, seed)
        full_cost = 1.0 if j == 0 else 1.0 / _ratio(unit_call, ref, timing)  # time_j / time_0
        hs, fs = _grid(H, head_points), _grid(F, neuron_points)
        point = {"model": model, "layer": j, "ref": ref, "full_cost": full_cost, "batch_size": batch_size,
                 "seq_len": seq_len, "seed": seed, "timing": timing}
        # Capped at the full layer's cost (the reference every point is paired against), then made monotone.
        head_cost = monotone(tuple(min(_cost_at(widths_at(full, j, (h, F)), **point), full_cost) for h in hs))
        neuron_cost = monotone(tuple(min(_cost_at(widths_at(full, j, (H, f)), **point), full_cost) for f in fs))
        tables.append(LayerTable(hs, head_cost, fs, neuron_cost, full_cost, tuple(layers)))
        log.debug("latency table of layers %s: %d + %d points", layers, len(hs), len(fs))
    # Two whole-model ratios pin the cost outside the layers and the in-model scale of layer costs.
    dense_call = model_call(model, batch_size, seq_len, seed)
    m_full = _ratio(dense_call, unit_call, timing)  # model / layer 0
    minimal = tuple((1, 1) for _ in full)
    m_min = m_full / _ratio(dense_call, model_call(first_k_copy(model, minimal), batch_size, seq_len, seed), timing)
    draft = LatencyTable(batch_size, seq_len, backend, torch.get_num_threads(), 0.0, tuple(tables), 0.0, 1.0, full)
    s_full, s_min = draft.latency(full), draft.latency(minimal)
    scale = (m_full - m_min) / (s_full - s_min) if s_full > s_min else 1.0
    if not scale > 0:  # noise swamped the difference (tiny models); fall back to "alone == in the model"
        log.warning("latency table: in-model scale %.3f is not positive; using 1.0", scale)
        scale = 1.0
    fixed = m_full - scale * s_full
    unit_seconds = time_paired(unit_call, unit_call, **timing.compare_kwargs()).baseline.median
    return LatencyTable(batch_size, seq_len, backend, torch.get_num_threads(), unit_seconds, tuple(tables),
                        fixed, scale, full, time.perf_counter() - start)


def random_widths(full: Widths, neuron_step: int, generator: torch.Generator) -> Widths:
    """Random per-layer widths (uniform head count in 1..H, uniform FFN width among the search's choices)."""
    out = []
    for H, F in full:
        h = int(torch.randint(1, H + 1, (1,), generator=generator))
        choices = neuron_choices(F, neuron_step)
        out.append((h, choices[int(torch.randint(0, len(choices), (1,), generator=generator))]))
    return tuple(out)


@torch.inference_mode()
def check_latency_model(
    model: nn.Module, table: LatencyTable, *, n_configs: int = 20, neuron_step: int = 32, seed: int = 0,
    timing: BenchSettings | None = None,
) -> dict[str, Any]:
    """Predicted vs measured (paired against the dense model) speedup of ``n_configs`` random widths.

    Returns:
        ``{"median_abs_error", "max_abs_error", "configs": [{"widths", "predicted", "measured", "ci", "error"}]}``
        with errors relative to the measured speedup.
    """
    timing = timing or BenchSettings(warmup=2, min_time=0.5, min_pairs=8, max_time=3.0, target_ci=0.015)
    gen = torch.Generator().manual_seed(seed)
    dense_call = model_call(model, table.batch_size, table.seq_len, seed)
    rows = []
    for _ in range(n_configs):
        widths = random_widths(table.full, neuron_step, gen)
        res = time_paired(dense_call, model_call(first_k_copy(model, widths), table.batch_size, table.seq_len, seed),
                          **timing.compare_kwargs())
        pred = table.speedup(widths)
        rows.append({"widths": [list(w) for w in widths], "predicted": pred, "measured": res.speedup,
                     "ci": [res.ci_low, res.ci_high], "error": (pred - res.speedup) / res.speedup})
    errors = np.abs([r["error"] for r in rows])
    return {"median_abs_error": float(np.median(errors)), "max_abs_error": float(errors.max()), "configs": rows}
