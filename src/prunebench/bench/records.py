"""Plain-data records of the measurement harness, each versioned and JSON round-trippable.

Every record is a frozen dataclass with ``to_dict()`` / ``from_dict()``; ``to_dict`` output is JSON-ready
(only str, int, float, bool, None, lists and dicts) and carries ``schema_version``. ``from_dict`` refuses
unknown keys and newer schema versions instead of guessing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prunebench.results.cell import CellRecord
from prunebench.serde import check_schema_version, reject_unknown

#: Version of every record layout in this module; bump it when a field changes meaning or is removed.
SCHEMA_VERSION = 1

R = TypeVar("R", bound="_Record")


def _load(cls: type[R], data: dict[str, Any], nested: dict[str, type[_Record]],
          nested_lists: dict[str, type[_Record]]) -> R:
    """Shared ``from_dict``: check the version and keys, rebuild nested records and lists of records."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
    fields = dict(data)
    check_schema_version(fields.pop("schema_version", SCHEMA_VERSION), SCHEMA_VERSION, cls.__name__)
    reject_unknown(fields, (f.name for f in dataclasses.fields(cls)), f"{cls.__name__} keys")
    for name, sub in nested.items():
        if fields.get(name) is not None:
            fields[name] = sub.from_dict(fields[name])
    for name, sub in nested_lists.items():
        if fields.get(name) is not None:
            fields[name] = [sub.from_dict(item) for item in fields[name]]
    return cls(**fields)


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: store them as None so every record stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class _Record:
    """Mixin giving dataclass records ``to_dict``; subclasses list their nested record fields."""

    _nested: dict[str, type[_Record]] = {}  # noqa: RUF012 (read-only class metadata)
    _nested_lists: dict[str, type[_Record]] = {}  # noqa: RUF012

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict including ``schema_version``."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _Record):
                out[f.name] = value.to_dict()
            elif isinstance(value, list) and value and all(isinstance(v, _Record) for v in value):
                out[f.name] = [v.to_dict() for v in value]
            else:
                out[f.name] = _clean(value)
        return out

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Inverse of :meth:`to_dict`; unknown keys or a newer schema are a ValueError."""
        return _load(cls, data, cls._nested, cls._nested_lists)


@dataclass(frozen=True)
class LatencyStats(_Record):
    """Latency of one callable (all times in seconds).

    Attributes:
        samples: every timed call, in order (warm-up calls excluded).
        first_call_s: duration of the very first (cold) call, kept apart from the statistics.
        warmup: number of warm-up calls made before timing (including the first).
        n: number of timed samples.
        mean, median, p90, p95, p99, std, min, max: statistics of ``samples``.
        cv: coefficient of variation (std / mean).
        total_s: sum of ``samples``.
        calls_per_sample: calls averaged into each sample (1 unless blocks were used).
        threads: ``torch.get_num_threads()`` while timing.
        timer: which timer produced the samples (``"wall"`` or ``"cuda-events"``).
    """

    samples: list[float]
    first_call_s: float | None
    warmup: int
    n: int
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    std: float
    cv: float
    min: float
    max: float
    total_s: float
    calls_per_sample: int = 1
    threads: int | None = None
    timer: str = "wall"


@dataclass(frozen=True)
class PairedResult(_Record):
    """Paired, interleaved comparison of a baseline and a candidate.

    Attributes:
        speedup: median over pairs of baseline_time / candidate_time (> 1 means the candidate is faster).
        ci_low, ci_high: bootstrap confidence interval of that median.
        confidence: level of the interval (0.95).
        ratios: per-pair ratios in the order measured.
        order: the interleaving pattern (``"ABBA/BAAB"``: rounds alternate, see :mod:`prunebench.bench.blocks`).
        n_boot, seed: bootstrap resamples and the seed of its numpy generator.
        baseline, candidate: each side's own latency statistics over the same pairs.
        stop_reason: why timing stopped (``"precision"``, ``"min_reached"``, ``"max_time"``, ``"max_pairs"``).
        block_sizes: how many of ``ratios`` (in order) each timing block holds; the CI resamples blocks.
    """

    speedup: float
    ci_low: float
    ci_high: float
    confidence: float
    ratios: list[float]
    order: str
    n_boot: int
    seed: int
    baseline: LatencyStats
    candidate: LatencyStats
    stop_reason: str = ""
    block_sizes: list[int] = field(default_factory=list)

    _nested = {"baseline": LatencyStats, "candidate": LatencyStats}  # noqa: RUF012

    @property
    def blocks(self) -> list[list[float]]:
        """``ratios`` grouped by timing block (one block when no sizes were recorded)."""
        sizes = self.block_sizes or [len(self.ratios)]
        out, start = [], 0
        for n in sizes:
            out.append(self.ratios[start : start + n])
            start += n
        return out

    @property
    def n_pairs(self) -> int:
        """Number of (baseline, candidate) pairs measured."""
        return len(self.ratios)

    @property
    def ci_half_width_rel(self) -> float:
        """Half the CI width relative to the speedup (0.03 = +-3%)."""
        return (self.ci_high - self.ci_low) / 2.0 / self.speedup if self.speedup > 0 else math.inf


@dataclass(frozen=True)
class MemoryReport(_Record):
    """Static size of a model (see :mod:`prunebench.bench.memory` for what each figure includes).

    Attributes:
        param_count: parameters (tied weights counted once; buffers excluded).
        param_bytes: their storage in bytes at their dtype.
        nonzero_count: parameters that are not exactly zero.
        nonzero_bytes: bytes those non-zero values occupy at their dtype (what an ideal sparse format
            would still have to store, indices not counted).
        disk_bytes: bytes of the saved model folder, or None if it was never saved.
    """

    param_count: int
    param_bytes: int
    nonzero_count: int
    nonzero_bytes: int
    disk_bytes: int | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of parameters that are exactly zero."""
        return 1.0 - self.nonzero_count / self.param_count if self.param_count else 0.0


@dataclass(frozen=True)
class BenchReport(_Record):
    """Everything one benchmark run produced (what ``prunebench bench --json`` writes).

    Attributes:
        environment: :func:`prunebench.bench.env.environment` of the run; ``fingerprint`` its short hash.
        settings: the :class:`~prunebench.bench.settings.BenchSettings` used, as a dict.
        baseline: name of the reference model.
        models: name -> ``{"source": folder or preset, "memory": MemoryReport dict}``.
        cells: every sweep cell (the one cell record of :mod:`prunebench.results.cell`), in grid order.
        kind: constant tag identifying the file type.
    """

    environment: dict[str, Any]
    fingerprint: str
    settings: dict[str, Any]
    baseline: str
    models: dict[str, Any]
    cells: list[CellRecord]
    kind: str = "prunebench-bench"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; cells in the store's row shape."""
        out = super().to_dict()
        out["cells"] = [c.to_row() for c in self.cells]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchReport:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, dict):
            raise ValueError(f"BenchReport.from_dict expects a dict, got {type(data).__name__}")
        report = _load(cls, {**data, "cells": []}, {}, {})
        return dataclasses.replace(report, cells=[CellRecord.from_row(c) for c in data.get("cells") or []])
