"""Is something else competing for the cores while we time? Measured around every timed block.

Paired ratios survive a uniformly slower machine, but not a competitor that takes the cores our timing
threads need: the two calls of a pair then run under different conditions, and the ratio can land anywhere
(a 2:4 model stored as dense zeros measured at 2.2x, a pruned model "faster" than its FLOP count allows).
The 1-minute load average cannot see this: it lags by a minute and cannot say which block was hit.

So a :class:`CpuMeter` reads, before and after each timed block, how much CPU time *other* processes used:
the busy time of the cores this process may run on (from ``/proc/stat``: everything that is not idle or
iowait, which includes time the hypervisor stole; the machine's total line unless ``taskset`` or a cpuset
narrowed the affinity) minus this process's own CPU time (all its threads, and its children that have ended:
OpenVINO's model conversion forks short-lived helpers that used about one core for 1-2 s and were read as
"other processes held 0.58 cores" by a search whose only other work was its own), per second of wall time, in
cores. ``/proc/stat`` counts in clock ticks (10 ms), so a block shorter than
:data:`MIN_WINDOW_S` is judged over a window reaching back to earlier readings of the same meter (the
previous blocks of the sweep): two ticks of rounding over a quarter second is 0.08 cores. A block is
called busy only when even the least the rounding allows is above the busy level, so a window still too
short (the first blocks of a sweep of tiny models) is never called busy by rounding alone. Where
``/proc/stat`` cannot be read (macOS, Windows), the meter falls back on the 1-minute load average minus
this process's own CPU per wall second: lagging, but the only portable figure; the cell records which.

A block is *busy* (:func:`is_busy`) when other processes held more than ``busy_share`` of the cores the
timing uses (its threads), beyond the cores it leaves free: with 2 threads on 2 cores and the default 0.25,
more than half a core; with 1 thread on 2 cores, more than 1.25 cores (a competitor on the core the timing
leaves free is no competitor). *Learned* (a first look, 6 s per condition on the shared 2-core VM, medium at
B=1, structured 50% against dense with 2 threads; ``benchmarks/contention.py`` is the benchmark): one
CPU-bound competitor held 0.6-0.9 cores and moved the blocks' median ratio from 1.77x to 2.36x, two held
1.0-1.4 cores (1.39x); the machine's own background held 0.02-0.15. A busy block is
discarded and timed again after a back-off (:mod:`prunebench.bench.sweep_state`). A cell is flagged
``contended`` when its kept blocks saw other processes at half the busy level on average, when it discarded
at least as many blocks as it kept, or when busy blocks were kept (``allow_busy``). Readers and clocks are
injected, so the rule is tested with a faked machine.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

try:
    import resource  # POSIX only: the children's CPU time
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

#: Default share of the timing's cores that other processes may hold during a block before it is busy.
BUSY_SHARE = 0.25
#: A cell is flagged contended when its kept blocks' mean reaches this fraction of the busy level.
FLAG_FRACTION = 0.5
#: Shortest stretch of wall time a block is judged over (``/proc/stat`` counts 10 ms ticks).
MIN_WINDOW_S = 0.25
#: Where a meter's figures came from.
SOURCES = ("proc-stat", "load-average")


def load_1m() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def own_cpu_seconds() -> float:
    """CPU seconds of this process (all threads) plus those of its children that have ended and been waited
    for: work this process started is not a competitor. A child still running is not seen until it ends."""
    seconds = time.process_time()
    if resource is None:
        return seconds
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds + children.ru_utime + children.ru_stime


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


def usable_cpus() -> frozenset[int] | None:
    """The CPUs this process may run on (its affinity mask, which ``taskset`` and cpusets narrow); None where
    the platform cannot say."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def proc_stat_idle(path: str = "/proc/stat", ticks_per_s: int | None = None,
                   cpus: frozenset[int] | None = None) -> tuple[float, int, int] | None:
    """(idle + iowait CPU seconds summed over the cores, number of cores, lines summed) from ``/proc/stat``;
    None where it cannot be read. Everything else (user, nice, system, irq, softirq, steal) is time a core was
    busy. ``cpus`` (default: this process's affinity) limits it to the cores the timing can run on: work on
    the others competes with nothing. All of them: the machine's total line (one line's rounding)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    rows = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[0].startswith("cpu"):
            rows[parts[0]] = parts
    total = rows.pop("cpu", None)
    per_cpu = {int(k[3:]): v for k, v in rows.items() if k[3:].isdigit()}
    wanted = usable_cpus() if cpus is None else cpus
    if wanted and set(wanted) < set(per_cpu):  # some of the machine's cores: their own lines
        chosen, cores = [per_cpu[c] for c in sorted(wanted)], len(wanted)
    elif total is not None:
        chosen, cores = [total], max(len(per_cpu), 1)
    else:
        return None
    try:
        ticks = sum(int(p[4]) + int(p[5]) for p in chosen)
    except ValueError:
        return None
    return ticks / (ticks_per_s or _clock_ticks()), cores, len(chosen)


def usable_cores() -> int:
    """Cores this process may run on."""
    cpus = usable_cpus()
    return len(cpus) if cpus else (os.cpu_count() or 1)


@dataclass(frozen=True)
class CpuReading:
    """One reading of a :class:`CpuMeter`.

    Attributes:
        wall: wall-clock seconds (monotonic).
        own_cpu: this process's CPU seconds (all threads, and its ended children: :func:`own_cpu_seconds`).
        idle: the machine's idle + iowait seconds over all cores (None: ``/proc/stat`` unreadable).
        cores: the cores ``idle`` covers (those this process may run on).
        load: the 1-minute load average (read only when ``idle`` is None).
    """

    wall: float
    own_cpu: float
    idle: float | None
    cores: int
    load: float | None = None
    #: ``/proc/stat`` lines summed into ``idle`` (each rounds idle and iowait down to a tick).
    lines: int = 1


@dataclass
class CpuMeter:
    """Reads how many cores other processes used between two readings (see the module docstring).

    One meter serves a whole sweep: its recent readings are what a short block's window reaches back to.

    Args:
        stat: reads (idle + iowait seconds, cores, ``/proc/stat`` lines summed), or None where it cannot.
        cpu_clock: this process's CPU seconds (:func:`own_cpu_seconds`); wall_clock: monotonic wall seconds.
        load: the 1-minute load average (the fallback).
        min_window: the shortest stretch judged, in seconds.
    """

    stat: Callable[[], tuple[float, int, int] | None] = proc_stat_idle
    cpu_clock: Callable[[], float] = own_cpu_seconds
    wall_clock: Callable[[], float] = time.perf_counter
    load: Callable[[], float | None] = load_1m
    min_window: float = MIN_WINDOW_S
    ticks_per_s: int = field(default_factory=_clock_ticks)
    _history: deque[CpuReading] = field(default_factory=deque)

    def read(self) -> CpuReading:
        """A reading now (kept while a later short block may reach back to it)."""
        stat = self.stat()
        if stat is None:
            reading = CpuReading(self.wall_clock(), self.cpu_clock(), None, os.cpu_count() or 1, self.load())
        else:
            reading = CpuReading(self.wall_clock(), self.cpu_clock(), stat[0], stat[1], lines=stat[2])
        history = self._history
        history.append(reading)
        # Keep the latest reading at least min_window old and every later one; older ones are never used.
        while len(history) >= 2 and history[1].wall <= reading.wall - self.min_window:
            history.popleft()
        return reading

    @staticmethod
    def source(reading: CpuReading) -> str:
        """Which of :data:`SOURCES` the reading's figures come from."""
        return SOURCES[0] if reading.idle is not None else SOURCES[1]

    def window_start(self, start: CpuReading, end: CpuReading) -> CpuReading:
        """``start``, or an earlier reading when the block is shorter than ``min_window`` (the latest one at
        least ``min_window`` before ``end``, else the oldest kept)."""
        if end.wall - start.wall >= self.min_window or not self._history:
            return start
        # read() keeps exactly that reading first (the oldest one while none is old enough).
        first = self._history[0]
        if first.wall > start.wall or (first.idle is None) != (start.idle is None):
            return start
        return first

    def measure(self, start: CpuReading, end: CpuReading) -> tuple[float, float] | None:
        """(cores other processes held on average between ``start`` and ``end``, the rounding that figure may
        carry, in cores); short blocks are measured over the window of :meth:`window_start`. None when the
        stretch has no length or the figures are missing."""
        first = self.window_start(start, end)
        wall = end.wall - first.wall
        if wall <= 0:
            return None
        own = (end.own_cpu - first.own_cpu) / wall
        if end.idle is not None and first.idle is not None:
            busy = end.cores - (end.idle - first.idle) / wall  # cores not idle on average
            # idle and iowait of each line are rounded down to a tick at both readings: two ticks a line.
            return max(0.0, busy - own), 2.0 * end.lines / self.ticks_per_s / wall
        loads = [x for x in (first.load, end.load) if x is not None]
        return (max(0.0, max(loads) - own), 0.0) if loads else None

    def other_cores(self, start: CpuReading, end: CpuReading) -> float | None:
        """Cores other processes held on average between ``start`` and ``end`` (see :meth:`measure`)."""
        got = self.measure(start, end)
        return None if got is None else got[0]

    def judge(self, start: CpuReading, end: CpuReading | None = None, threads: int = 1,
              busy_share: float = BUSY_SHARE) -> Contention:
        """Whether the stretch from ``start`` to ``end`` (default: now) was busy for a timing on ``threads``
        threads: busy only when even the least the tick rounding allows is above :func:`busy_level`."""
        end = end or self.read()
        got = self.measure(start, end)
        level = busy_level(end.cores, threads, busy_share)
        other, rounding = got if got is not None else (None, 0.0)
        busy = other is not None and other - rounding > level
        return Contention(other, rounding, level, busy, end.cores, threads, self.source(end))


@dataclass(frozen=True)
class Contention:
    """How busy the machine was over one stretch of timing (see :meth:`CpuMeter.judge`).

    Attributes:
        other_cores: cores other processes held on average (None: unknown).
        rounding: how far ``other_cores`` may be off by ``/proc/stat``'s ticks, in cores.
        level: the busy level (:func:`busy_level`); busy: ``other_cores - rounding`` above it.
        cores, threads: the machine's cores and the timing's threads; source: one of :data:`SOURCES`.
    """

    other_cores: float | None
    rounding: float
    level: float
    busy: bool
    cores: int
    threads: int
    source: str

    def to_dict(self) -> dict[str, float | int | bool | str | None]:
        """JSON-ready dict."""
        return {"other_cores": self.other_cores, "level": self.level, "busy": self.busy, "cores": self.cores,
                "threads": self.threads, "source": self.source}

    def describe(self) -> str:
        """``other processes held 1.40 cores of 2 (busy above 0.50)``."""
        held = "an unknown share" if self.other_cores is None else f"{self.other_cores:.2f} cores"
        return f"other processes held {held} of {self.cores} (busy above {self.level:.2f})"


def busy_level(cores: int, threads: int, busy_share: float = BUSY_SHARE) -> float:
    """Other processes' cores above which a block is busy: the cores the timing leaves free plus
    ``busy_share`` of the ones its ``threads`` need."""
    need = max(1, min(threads, cores))
    return (cores - need) + busy_share * need


def is_busy(other: float | None, cores: int, threads: int, busy_share: float = BUSY_SHARE) -> bool:
    """Whether a block during which other processes held ``other`` cores is busy (unknown: not busy)."""
    return other is not None and other > busy_level(cores, threads, busy_share)


@dataclass
class LoadProbe:
    """The machine's load over the blocks of one cell: ``start()`` / ``stop()`` around each block.

    ``stop()`` says whether the block was busy; the sweep discards a busy block (unless ``allow_busy``), and
    :meth:`finish` gives the cell's fields.

    Args:
        meter: the sweep's meter (shared by its cells).
        threads: the timing's threads (what the busy level is relative to).
        busy_share: see :func:`busy_level`.
        allow_busy: busy blocks are kept (and the cell flagged) rather than discarded.
    """

    meter: CpuMeter = field(default_factory=CpuMeter)
    threads: int = 1
    busy_share: float = BUSY_SHARE
    allow_busy: bool = False
    load_before: float | None = None
    cpu_s: float = 0.0
    wall_s: float = 0.0
    kept_other: list[float] = field(default_factory=list)
    max_other: float | None = None
    busy_blocks: int = 0
    discarded_blocks: int = 0
    busy_kept: int = 0
    source: str | None = None
    cores: int | None = None
    _mark: CpuReading | None = None

    def start(self) -> None:
        """Mark the start of a timed block (the first call also reads the load average)."""
        if self.load_before is None:
            self.load_before = self.meter.load()
        self._mark = self.meter.read()

    def stop(self) -> bool:
        """Mark the end of a timed block; True when it was busy (other processes above the busy level)."""
        if self._mark is None:
            return False
        start, end = self._mark, self.meter.read()
        self._mark = None
        self.cpu_s += end.own_cpu - start.own_cpu
        self.wall_s += end.wall - start.wall
        seen = self.meter.judge(start, end, self.threads, self.busy_share)
        self.source, self.cores, busy = seen.source, seen.cores, seen.busy
        # A figure as coarse as the busy level itself (a window of a few ticks) is no figure to keep.
        other = seen.other_cores if seen.rounding <= FLAG_FRACTION * seen.level else None
        if other is not None:
            self.max_other = other if self.max_other is None else max(self.max_other, other)
        self.busy_blocks += busy
        if busy and not self.allow_busy:
            self.discarded_blocks += 1
            return True
        self.busy_kept += busy
        if other is not None:
            self.kept_other.append(other)
        return busy

    @property
    def level(self) -> float:
        """The busy level of this cell's blocks (see :func:`busy_level`)."""
        return busy_level(self.cores or usable_cores(), self.threads, self.busy_share)

    @property
    def mean_other(self) -> float | None:
        """Mean cores other processes held over the kept blocks."""
        return sum(self.kept_other) / len(self.kept_other) if self.kept_other else None

    def contended(self) -> bool | None:
        """Whether the cell's kept figures were measured while something else competed (None: unknown)."""
        if self.busy_kept or (self.discarded_blocks and self.discarded_blocks >= len(self.kept_other)):
            return True
        mean = self.mean_other
        if mean is None:
            return None
        return mean > FLAG_FRACTION * self.level

    def finish(self) -> dict[str, float | int | bool | str | None]:
        """The cell's load fields (see :class:`prunebench.results.cell.CellRecord`)."""
        return {
            "load_1m_before": self.load_before,
            "load_1m_after": self.meter.load(),
            "cpu_per_wall": self.cpu_s / self.wall_s if self.wall_s > 0 else None,
            "contended": self.contended(),
            "other_cores": self.mean_other,
            "other_cores_max": self.max_other,
            "busy_blocks": self.busy_blocks,
            "discarded_blocks": self.discarded_blocks,
            "busy_allowed": self.allow_busy,
            "contention_source": self.source,
        }
