"""Building a searched model, checking it, and timing it against the dense model (paired).

A target counts as *met* only when the lower end of the measured speedup's confidence interval reaches it:
the same standard the run's table uses for "faster" (the whole CI above 1), and only when the machine was
quiet while it was measured (:mod:`prunebench.bench.load`): a verifying measurement during which other
processes held the cores is taken again after a back-off, and one still busy is no verdict.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunebench.bench.inputs import make_inputs
from prunebench.bench.load import CpuMeter
from prunebench.bench.settings import BenchSettings
from prunebench.bench.timing import time_paired
from prunebench.pruning import PrunePlan, PruneSpec, apply_plan_, check_fidelity
from prunebench.search._arch import Widths, adapter_of, full_widths
from prunebench.search.allocate import Allocation, allocation_of, uniform_fraction_for, uniform_widths
from prunebench.search.importance import Importance
from prunebench.search.latency import LatencyTable
from prunebench.search.measure import model_call

#: Verification budget: longer than a table point, since this is the figure a target is judged on.
VERIFY_TIMING = BenchSettings(warmup=3, min_time=2.0, min_pairs=20, max_time=12.0, target_ci=0.01,
                              measure_memory=False)
#: A verifying measurement taken while the machine was busy is taken again this many times, after a back-off.
BUSY_RETRIES = 2
BUSY_BACKOFF_S = 2.0


@dataclass(frozen=True)
class Measured:
    """A paired speedup against the dense model, with its bootstrap CI and how busy the machine was.

    Attributes:
        busy: other processes held the cores while it was measured (every try); ``contention`` says how much
            (:meth:`prunebench.bench.load.Contention.to_dict`), ``tries`` how often it was measured.
    """

    speedup: float
    ci_low: float
    ci_high: float
    pairs: int
    busy: bool = False
    contention: dict[str, Any] | None = None
    tries: int = 1
    backend: str = "eager"
    baseline: str = "dense eager"
    fidelity: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"speedup": self.speedup, "ci": [self.ci_low, self.ci_high], "pairs": self.pairs, "busy": self.busy,
                "contention": self.contention, "tries": self.tries, "backend": self.backend,
                "baseline": self.baseline, "fidelity": self.fidelity}


def plan_of(model: nn.Module, alloc: Allocation) -> PrunePlan:
    """The :class:`PrunePlan` (per-layer kept heads and neurons) of ``alloc`` on the dense ``model``."""
    full = full_widths(adapter_of(model))
    groups = sum(h + f for h, f in full)
    removed = sum(h + f for h, f in full) - sum(h + f for h, f in alloc.widths)
    # The nearest PruneSpec: structured, one global ranking; the search's own settings go in the manifest.
    spec = PruneSpec(method="structured", sparsity=min(removed / groups, 0.999), scope="global",
                     granularity="both", criterion="taylor")
    return PrunePlan(spec=spec, config=adapter_of(model).config_dict(), heads=dict(alloc.heads),
                     neurons=dict(alloc.neurons))


def build(model: nn.Module, alloc: Allocation, seq_len: int, seed: int = 0) -> tuple[nn.Module, PrunePlan, dict]:
    """Shrink a copy of ``model`` to ``alloc`` and check it against the masked dense model (before timing).

    Raises:
        RuntimeError: the shrunk model's outputs differ from the masked reference.
    """
    plan = plan_of(model, alloc)
    adapter = adapter_of(model)
    pruned = copy.deepcopy(model).eval()
    apply_plan_(pruned, plan, "shrink")
    masked = copy.deepcopy(model).eval()
    apply_plan_(masked, plan, "zeros")
    batch = make_inputs(adapter.vocab_size, 2, seq_len, seed=seed + 1, pad_fraction=0.25)
    fidelity = check_fidelity(masked, pruned, batch)
    if not fidelity["ok"]:
        raise RuntimeError(f"shrunk model differs from the masked reference by {fidelity['max_abs_diff']:.3g}")
    return pruned, plan, fidelity


def measure_calls(dense_call: Callable[[], Any], cand_call: Callable[[], Any], timing: BenchSettings, *,
                  meter: CpuMeter | None = None, sleep: Callable[[float], None] = time.sleep) -> Measured:
    """Paired (ABBA) speedup of ``cand_call`` over ``dense_call``, measured again (up to :data:`BUSY_RETRIES`
    times, :data:`BUSY_BACKOFF_S` apart) while other processes held the cores, unless ``timing.allow_busy``;
    the result says whether its last try was still busy."""
    meter = meter or CpuMeter()
    for attempt in range(1, BUSY_RETRIES + 2):
        start = meter.read()
        with torch.inference_mode():
            res = time_paired(dense_call, cand_call, **timing.compare_kwargs())
        seen = meter.judge(start, threads=timing.threads or torch.get_num_threads(), busy_share=timing.busy_share)
        if not seen.busy or timing.allow_busy or attempt > BUSY_RETRIES:
            break
        sleep(BUSY_BACKOFF_S)
    return Measured(res.speedup, res.ci_low, res.ci_high, len(res.ratios), busy=seen.busy,
                    contention=seen.to_dict(), tries=attempt)


def measure_speedup(dense: nn.Module, candidate: nn.Module, table: LatencyTable, timing: BenchSettings,
                    seed: int = 0, *, meter: CpuMeter | None = None,
                    sleep: Callable[[float], None] = time.sleep) -> Measured:
    """:func:`measure_calls` of ``candidate`` against ``dense``, both eager, at the table's shape."""
    return measure_calls(model_call(dense, table.batch_size, table.seq_len, seed),
                         model_call(candidate, table.batch_size, table.seq_len, seed), timing, meter=meter, sleep=sleep)


def uniform_at_measured(
    dense: nn.Module, importance: Importance, table: LatencyTable, speedup: float, timing: BenchSettings,
    *, tries: int = 4, tolerance: float = 0.02, seed: int = 0,
    measure: Callable[[nn.Module], Measured] | None = None, eager_aim: Callable[[float], float] | None = None,
) -> tuple[nn.Module, Widths, float, Measured, list[dict[str, Any]]]:
    """Uniform structured pruning (same fraction of heads and neurons everywhere, top ones by ``importance``)
    tuned until its *measured* speedup is within ``tolerance`` of ``speedup``.

    ``measure`` times a model (default: eager against eager dense, :func:`measure_speedup`) and ``eager_aim``
    turns a speedup of that measure into the eager latency model's (default: the same), so a search on
    another backend compares with uniform pruning at the same speed on that backend.

    Returns:
        ``(model, widths, fraction, measured, attempts)``: the attempt closest to ``speedup``.
    """
    aim = speedup
    best: tuple[float, nn.Module, Widths, float, Measured] | None = None
    attempts = []
    for _ in range(tries):
        fraction = uniform_fraction_for(table, eager_aim(aim) if eager_aim is not None else aim)
        widths = uniform_widths(table.full, fraction)
        model, _, _ = build(dense, allocation_of(importance, table, widths, aim), table.seq_len, seed)
        got = measure(model) if measure is not None else measure_speedup(dense, model, table, timing, seed)
        attempts.append({"fraction": fraction, "widths": [list(w) for w in widths], "predicted": table.speedup(widths),
                         "measured": got.to_dict()})
        gap = abs(got.speedup - speedup) / speedup
        if best is None or gap < best[0]:
            best = (gap, model, widths, fraction, got)
        if gap <= tolerance:
            break
        aim = max(1.0 + 1e-6, aim * speedup / got.speedup)  # correct the aim by the measured miss
    assert best is not None
    return best[1], best[2], best[3], best[4], attempts
