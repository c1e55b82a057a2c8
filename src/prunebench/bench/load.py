"""The machine's load while a cell is timed: is something else competing for the cores?

Paired ratios survive a uniformly slower machine, but not a competitor that comes and goes between the two
calls of a pair, and nothing inside the timing loop can see one. So every cell records the 1-minute load
average when its timing started and ended, the process's CPU time against wall time over its blocks, and the
CPU time the hypervisor stole (``/proc/stat``), and is flagged ``contended`` when

* the load average exceeds the number of cores by more than half a core (more runnable threads than cores:
  our own timing threads never exceed the core count on their own), or
* more than 5% of the CPU time was stolen by the hypervisor.

Readers are injected, so the rule is tested with a faked load.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: Runnable threads above the core count that count as contention.
LOAD_MARGIN = 0.5
#: Share of stolen CPU time that counts as contention.
STEAL_LIMIT = 0.05


def load_1m() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def cpu_jiffies(path: str = "/proc/stat") -> tuple[int, int] | None:
    """(total, steal) CPU jiffies over all cores from ``/proc/stat``; None where it cannot be read."""
    try:
        line = Path(path).read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    parts = line.split()
    if not parts or parts[0] != "cpu" or len(parts) < 9:
        return None
    values = [int(v) for v in parts[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is already in user.
    return sum(values[:8]), values[7]


@dataclass
class LoadProbe:
    """Accumulates load figures over the blocks of one cell (``start()`` / ``stop()`` around each block).

    Args:
        cpu_count: cores available to this process.
        load: reads the 1-minute load average.
        jiffies: reads (total, steal) CPU jiffies.
        cpu_clock, wall_clock: process CPU time and wall time, in seconds.
    """

    cpu_count: int = field(default_factory=lambda: len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                           else (os.cpu_count() or 1))
    load: Callable[[], float | None] = load_1m
    jiffies: Callable[[], tuple[int, int] | None] = cpu_jiffies
    cpu_clock: Callable[[], float] = time.process_time
    wall_clock: Callable[[], float] = time.perf_counter
    load_before: float | None = None
    load_after: float | None = None
    cpu_s: float = 0.0
    wall_s: float = 0.0
    total_jiffies: int = 0
    steal_jiffies: int = 0
    _mark: tuple[float, float, tuple[int, int] | None] | None = None

    def start(self) -> None:
        """Mark the start of a timed block (the first call also reads the load average)."""
        if self.load_before is None:
            self.load_before = self.load()
        self._mark = (self.cpu_clock(), self.wall_clock(), self.jiffies())

    def stop(self) -> None:
        """Mark the end of a timed block and add its figures."""
        if self._mark is None:
            return
        cpu0, wall0, jif0 = self._mark
        self.cpu_s += self.cpu_clock() - cpu0
        self.wall_s += self.wall_clock() - wall0
        jif1 = self.jiffies()
        if jif0 is not None and jif1 is not None:
            self.total_jiffies += jif1[0] - jif0[0]
            self.steal_jiffies += jif1[1] - jif0[1]
        self._mark = None

    def finish(self) -> dict[str, float | bool | None]:
        """The cell's load fields (see :class:`prunebench.results.cell.CellRecord`)."""
        self.load_after = self.load()
        steal = self.steal_jiffies / self.total_jiffies if self.total_jiffies > 0 else None
        return {
            "load_1m_before": self.load_before,
            "load_1m_after": self.load_after,
            "cpu_per_wall": self.cpu_s / self.wall_s if self.wall_s > 0 else None,
            "steal_fraction": steal,
            "contended": is_contended(self.load_before, self.load_after, steal, self.cpu_count),
        }


def is_contended(load_before: float | None, load_after: float | None, steal_fraction: float | None,
                 cpu_count: int) -> bool | None:
    """The contention rule of the module docstring; None when no figure could be read."""
    loads = [x for x in (load_before, load_after) if x is not None]
    if not loads and steal_fraction is None:
        return None
    busy = bool(loads) and max(loads) > cpu_count + LOAD_MARGIN
    stolen = steal_fraction is not None and steal_fraction > STEAL_LIMIT
    return busy or stolen
