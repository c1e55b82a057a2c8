"""Budget and conditions of a benchmark, with named presets (``quick``, ``default``, ``precise``).

Sizing: ``prunebench run`` times about 5 variants against dense at batch sizes 1..16 (25 cells) on
``medium`` in roughly 90 s on 2 cores, i.e. a few seconds per cell, warm-up included. ``quick`` aims at that:
measured with 1 thread on the shared 2-core machine under a load average of ~5, one variant over batch sizes
1..16 took 20 s (about 1 s at batch 1 up to 6 s at batch 16, where one ABBA round of four calls is the
minimum). ``default`` spends up to ~10 s on a cell and stops early once the speedup's CI is within +-2%.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from prunebench.bench.inputs import parse_device
from prunebench.bench.load import BUSY_SHARE
from prunebench.registry import Registry
from prunebench.serde import reject_unknown


@dataclass(frozen=True)
class BenchSettings:
    """How long and under which conditions to time each cell.

    Attributes:
        warmup: untimed calls per side before timing (the first one's time is recorded separately).
        min_time: seconds of paired timing at least, per cell ...
        min_pairs: ... and at least this many (baseline, candidate) pairs (rounded up to whole ABBA rounds);
        max_time: seconds at most per cell (after warm-up), which wins over the minimums;
        max_pairs: pairs at most.
        block_pairs: pairs per timing block (rounded up to whole ABBA/BAAB rounds of two); a sweep visits its
            cells round-robin, one block at a time.
        min_blocks: blocks at least per cell, so that its interval sees the machine at several moments.
        block_warmup: untimed calls per side at the start of each block after the first (caches then hold
            another cell's weights).
        target_ci: stop early once the relative CI half-width of the speedup is at most this (None: never).
        calls_per_sample: calls averaged into each timed sample.
        confidence, n_boot, seed: bootstrap settings; ``seed`` also seeds the inputs.
        threads: ``torch.set_num_threads`` while timing (None keeps the current value); recorded.
        device: ``cpu`` or ``cuda``.
        include_head: time the task head too (default: encoder only); recorded with every cell.
        pad_fraction: expected fraction of padding in the inputs.
        measure_memory: also measure one forward's peak memory per cell.
        busy_share: a block during which other processes held more than this share of the cores the timing
            uses (beyond those it leaves free) is busy (:mod:`prunebench.bench.load`): discarded and timed
            again after a back-off; a cell without ``min_blocks`` quiet blocks within ``max_time`` is
            ``unmeasured``.
        allow_busy: keep busy blocks instead (the cell is flagged contended and records ``busy_allowed``).
    """

    warmup: int = 2
    min_time: float = 1.0
    min_pairs: int = 10
    max_time: float = 10.0
    max_pairs: int = 2000
    block_pairs: int = 4
    min_blocks: int = 5
    block_warmup: int = 1
    target_ci: float | None = 0.02
    calls_per_sample: int = 1
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    include_head: bool = False
    pad_fraction: float = 0.0
    measure_memory: bool = True
    busy_share: float = BUSY_SHARE
    allow_busy: bool = False

    def __post_init__(self) -> None:
        for name in ("warmup", "min_pairs", "max_pairs", "calls_per_sample", "n_boot", "block_pairs", "min_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.block_warmup, int) or isinstance(self.block_warmup, bool) or self.block_warmup < 0:
            raise ValueError(f"block_warmup must be a non-negative integer, got {self.block_warmup!r}")
        if self.max_pairs < self.min_pairs:
            raise ValueError(f"max_pairs ({self.max_pairs}) must be >= min_pairs ({self.min_pairs})")
        if not self.min_time >= 0 or not self.max_time > 0:
            raise ValueError(f"min_time must be >= 0 and max_time > 0, got {self.min_time} and {self.max_time}")
        if self.target_ci is not None and not self.target_ci > 0:
            raise ValueError(f"target_ci must be positive or None, got {self.target_ci}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer, got {self.threads!r}")
        parse_device(self.device, require_available=False)  # availability is checked when measuring
        if not 0.0 <= self.pad_fraction < 1.0:
            raise ValueError(f"pad_fraction must lie in [0, 1), got {self.pad_fraction}")
        if isinstance(self.busy_share, bool) or not isinstance(self.busy_share, (int, float)) \
                or not 0.0 < self.busy_share <= 1.0:
            raise ValueError(f"busy_share must lie in (0, 1], got {self.busy_share!r}")

    def compare_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`prunebench.bench.timing.time_paired`."""
        return {
            "warmup": self.warmup, "min_time": self.min_time, "min_pairs": self.min_pairs,
            "max_pairs": self.max_pairs, "max_time": self.max_time, "target_ci": self.target_ci,
            "calls_per_sample": self.calls_per_sample, "confidence": self.confidence, "n_boot": self.n_boot,
            "seed": self.seed, "threads": self.threads,
        }

    def measure_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`prunebench.bench.timing.measure` (pairs read as iterations)."""
        return {
            "warmup": self.warmup, "min_time": self.min_time, "min_iters": self.min_pairs,
            "max_iters": self.max_pairs, "max_time": self.max_time, "calls_per_sample": self.calls_per_sample,
            "threads": self.threads,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (recorded next to results)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchSettings:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        reject_unknown(data, cls.__dataclass_fields__, "bench settings")
        return cls(**data)


#: Named budgets: ``BENCH_PRESETS.get("quick")``; customize with :func:`bench_settings`.
BENCH_PRESETS: Registry[BenchSettings] = Registry("bench preset")
BENCH_PRESETS.add("quick", BenchSettings(warmup=1, min_time=0.4, min_pairs=6, max_time=2.5, target_ci=0.03,
                                         block_pairs=2, min_blocks=3))
BENCH_PRESETS.add("default", BenchSettings())
BENCH_PRESETS.add("precise", BenchSettings(warmup=3, min_time=3.0, min_pairs=30, max_time=60.0, target_ci=0.01,
                                           min_blocks=10))


def bench_settings(preset: str = "default", **overrides: Any) -> BenchSettings:
    """Settings of a named preset with ``overrides`` applied (None values are ignored), validated."""
    base = BENCH_PRESETS.get(preset)
    reject_unknown(overrides, BenchSettings.__dataclass_fields__, "bench setting(s)", list_valid=True)
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
