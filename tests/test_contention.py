"""Contention measured per timed block: busy blocks discarded and timed again, cells left unmeasured, the reader
seeing a real competing process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from prunebench.bench.inputs import make_inputs
from prunebench.bench.load import CpuMeter, busy_level, is_busy, proc_stat_idle
from prunebench.bench.settings import BenchSettings
from prunebench.bench.sweep import sweep
from prunebench.bench.timing import WallTimer
from prunebench.cli.main import main
from prunebench.results.cell import CELL_FIELDS, CellRecord
from prunebench.runner.stages import RunOutcome
from tests.test_results_synthetic import fill_store, make_snapshot

SETTINGS = BenchSettings(warmup=1, min_time=0.0, min_pairs=4, max_time=200.0, target_ci=None, n_boot=200,
                         measure_memory=False, block_pairs=2, min_blocks=4, block_warmup=0)


class FakeMachine:
    """A 2-core machine on a fake clock: this process runs at ``own(t)`` cores and other processes at
    ``others(t)``; ``/proc/stat``'s idle figure is what is left. Shared by a model and its deep copy."""

    def __init__(self, others: Callable[[float], float], own: Callable[[float], float] | None = None,
                 cores: int = 2) -> None:
        self.others, self.own = others, own or (lambda t: 1.0)
        self.cores, self.now, self.idle, self.own_cpu = cores, 0.0, 0.0, 0.0
        self.sleeps: list[float] = []

    def __deepcopy__(self, memo: dict) -> FakeMachine:
        return self

    def advance(self, dt: float) -> None:
        own, other = self.own(self.now), self.others(self.now)
        self.idle += dt * max(0.0, self.cores - own - other)
        self.own_cpu += dt * own
        self.now += dt

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        saved = self.own
        self.own = lambda t: 0.0  # asleep: this process uses no CPU
        self.advance(seconds)
        self.own = saved

    def meter(self) -> CpuMeter:
        return CpuMeter(stat=lambda: (self.idle, self.cores, 1), cpu_clock=lambda: self.own_cpu,
                        wall_clock=lambda: self.now, load=lambda: None, ticks_per_s=10**9)


class FakeModel(nn.Module):
    """Each call costs ``cost`` seconds of the machine's clock; while ``distort(t)`` it costs ``factor`` times
    as much (what a competitor does to one side of a pair)."""

    def __init__(self, machine: FakeMachine, cost: float, distort: Callable[[float], bool] = lambda t: False,
                 factor: float = 1.0) -> None:
        super().__init__()
        self.machine, self.cost, self.distort, self.factor = machine, cost, distort, factor
        self.lin = nn.Linear(1, 1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = self.machine
        m.advance(self.cost * (self.factor if self.distort(m.now) else 1.0))
        return ids


def _sweep(machine: FakeMachine, half: nn.Module, settings: BenchSettings = SETTINGS) -> dict[str, CellRecord]:
    dense = FakeModel(machine, 0.1)
    now = lambda: machine.now  # noqa: E731
    cells = sweep({"dense": dense, "half": half}, lambda b, s: make_inputs(10, b, s), batch_sizes=(1,),
                  seq_lens=(4,), settings=settings, timer=WallTimer(now), clock=now, meter=machine.meter(),
                  sleep=machine.sleep)
    return {c.variant: c for c in cells}


def test_the_busy_level_is_relative_to_the_cores_the_timing_needs() -> None:
    assert busy_level(cores=2, threads=2) == pytest.approx(0.5)
    assert busy_level(cores=2, threads=1) == pytest.approx(1.25)  # the free core may be used by others
    assert busy_level(cores=16, threads=16) == pytest.approx(4.0)
    assert busy_level(cores=2, threads=8) == pytest.approx(0.5)  # more threads than cores: all the cores
    assert is_busy(0.6, 2, 2) and not is_busy(0.4, 2, 2) and not is_busy(None, 2, 2)
    assert not is_busy(1.0, 2, 1) and is_busy(1.3, 2, 1)


def test_busy_blocks_are_discarded_and_timed_again() -> None:
    # Between t=1 and t=3 other processes hold 1.5 of 2 cores (this process gets 0.5), and the candidate's
    # calls take six times as long: kept, those pairs would pull its speedup from 2.0 towards 0.33.
    busy = lambda t: 1.0 <= t < 3.0  # noqa: E731
    machine = FakeMachine(lambda t: 1.5 if busy(t) else 0.05, lambda t: 0.5 if busy(t) else 1.0)
    cells = _sweep(machine, FakeModel(machine, 0.05, busy, factor=6.0))
    half = cells["half"]
    assert half.ok and half.discarded_blocks >= 1 and half.busy_blocks == half.discarded_blocks
    assert half.speedup == pytest.approx(2.0, rel=1e-6) and half.speedup_ci_high == pytest.approx(2.0, rel=1e-6)
    assert half.n_blocks >= SETTINGS.min_blocks and half.contention_source == "proc-stat"
    # Kept blocks that only touched the busy stretch raise the mean a little, not to the flag (0.625 cores).
    assert 0.05 <= half.other_cores < 0.625 and half.contended is False
    assert half.other_cores_max == pytest.approx(1.5, abs=0.01)
    # Back-off: 0.2 s, doubling with each busy block in a row, at most 1.6 s.
    assert machine.sleeps[:2] == [0.2, 0.4] and max(machine.sleeps) <= 1.6
    # Kept, the busy blocks would have shown: the same sweep with the rule off.
    machine = FakeMachine(lambda t: 1.5 if busy(t) else 0.05, lambda t: 0.5 if busy(t) else 1.0)
    allowed = _sweep(machine, FakeModel(machine, 0.05, busy, factor=6.0),
                     BenchSettings(**{**SETTINGS.to_dict(), "allow_busy": True}))["half"]
    assert allowed.ok and allowed.busy_allowed and allowed.discarded_blocks == 0 and allowed.busy_blocks >= 1
    assert allowed.contended is True and allowed.speedup_ci_low < 1.5 and machine.sleeps == []


def test_a_quiet_machine_discards_nothing_and_flags_nothing() -> None:
    machine = FakeMachine(lambda t: 0.05)
    cells = _sweep(machine, FakeModel(machine, 0.05))
    assert all(c.ok and c.discarded_blocks == 0 and c.contended is False for c in cells.values())
    assert machine.sleeps == []


def test_a_cell_that_never_gets_quiet_blocks_is_unmeasured() -> None:
    machine = FakeMachine(lambda t: 1.6, lambda t: 0.4)
    settings = BenchSettings(**{**SETTINGS.to_dict(), "max_time": 5.0})
    cells = _sweep(machine, FakeModel(machine, 0.05), settings)
    for c in cells.values():
        assert c.status == "unmeasured" and c.unmeasured and not c.failed and not c.ok
        assert c.error.startswith("machine busy: 0 of 4 quiet blocks in ") and "1.60 cores" in c.error
        assert c.n_blocks == 0 and c.speedup is None and c.discarded_blocks >= 3 and c.contended is True
    # Bounded by max_time, back-offs included: never more than max_time plus one block and one back-off.
    assert machine.now <= 2 * (5.0 + 1.6 + 1.0)
    # Stored within schema v2: the new figures travel in the extra column, not in new columns.
    row = cells["half"].to_row()
    assert {"other_cores_max", "discarded_blocks"} & {f for f, _ in CELL_FIELDS} == set()
    assert CellRecord.from_row(row).discarded_blocks == cells["half"].discarded_blocks


def test_an_unmeasured_cell_keeps_what_its_quiet_blocks_gave() -> None:
    # Quiet only for the first two blocks.
    machine = FakeMachine(lambda t: 1.6 if t > 0.9 else 0.0, lambda t: 0.4 if t > 0.9 else 1.0)
    cells = _sweep(machine, FakeModel(machine, 0.05), BenchSettings(**{**SETTINGS.to_dict(), "max_time": 5.0}))
    half = cells["half"]
    assert half.unmeasured and 1 <= half.n_blocks < SETTINGS.min_blocks and half.speedup == pytest.approx(2.0)
    assert f"{half.n_blocks} of 4 quiet blocks" in half.error


def test_a_window_of_a_few_ticks_is_not_called_busy_by_rounding() -> None:
    state = {"now": 0.0, "idle": 0.0}
    meter = CpuMeter(stat=lambda: (state["idle"], 2, 1), cpu_clock=lambda: 0.0, wall_clock=lambda: state["now"],
                     load=lambda: None, ticks_per_s=100)
    start = meter.read()
    state["now"] = 0.004  # 4 ms and the idle counter has not ticked yet: reads as 2 cores busy
    end = meter.read()
    other, rounding = meter.measure(start, end)
    assert other == pytest.approx(2.0) and rounding == pytest.approx(5.0)
    assert not is_busy(other - rounding, 2, 2)
    # Later short blocks reach back a quarter second: two ticks over 0.25 s.
    state["now"], state["idle"] = 0.3, 0.59
    meter.read()
    state["now"] = 0.302
    start = meter.read()
    state["now"], state["idle"] = 0.304, 0.59
    other, rounding = meter.measure(start, meter.read())
    assert other == pytest.approx(2 - 0.59 / 0.3, abs=1e-9) and rounding == pytest.approx(0.02 / 0.3)


def test_proc_stat_counts_the_cores_this_process_may_run_on(tmp_path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 1000 20 0 0 5 0 0\n"
                    "cpu0 25 0 10 200 5 0 0 1 0 0\ncpu1 25 0 10 300 5 0 0 1 0 0\n"
                    "cpu2 25 0 15 250 5 0 0 2 0 0\ncpu3 25 0 15 250 5 0 0 1 0 0\nintr 12345\n")
    # All four cores: the total line (idle 1000 + iowait 20 ticks), one line's rounding.
    assert proc_stat_idle(str(stat), 100, frozenset({0, 1, 2, 3})) == (10.2, 4, 1)
    # Pinned to cores 0 and 2 (taskset, a cpuset): work on the others competes with nothing.
    assert proc_stat_idle(str(stat), 100, frozenset({0, 2})) == (4.6, 2, 2)
    assert proc_stat_idle(str(stat), 100, frozenset({0, 9})) == (10.2, 4, 1)  # not a subset: the total


def test_without_proc_stat_the_meter_falls_back_on_the_load_average() -> None:
    state = {"now": 0.0, "cpu": 0.0}
    meter = CpuMeter(stat=lambda: None, cpu_clock=lambda: state["cpu"], wall_clock=lambda: state["now"],
                     load=lambda: 3.0)
    start = meter.read()
    state["now"], state["cpu"] = 1.0, 1.0
    end = meter.read()
    assert meter.source(end) == "load-average" and meter.other_cores(start, end) == pytest.approx(2.0)
    assert proc_stat_idle("/nonexistent/stat") is None


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs /proc/stat")
def test_the_reader_sees_a_real_competing_process() -> None:
    # A CPU-bound child that stops by itself after 3 s (and is killed by its PID in any case).
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 3\nwhile time.time() < t: pass"])
    try:
        meter = CpuMeter()
        time.sleep(0.3)  # let it start
        start = meter.read()
        time.sleep(1.0)  # this process sleeps: whatever is busy is someone else
        other = meter.other_cores(start, meter.read())
        assert other is not None and other > 0.5, other
    finally:
        child.kill()
        child.wait()


def test_work_this_process_started_and_waited_for_is_not_a_competitor() -> None:
    """OpenVINO's conversion forks short helpers: a search read them as "other processes held 0.58 cores"."""
    meter = CpuMeter()
    start = meter.read()
    burn = "import time\nt = time.process_time() + 1.0\nwhile time.process_time() < t: pass"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)  # about one core-second, then reaped
    end = meter.read()
    other = meter.other_cores(start, end)
    assert end.own_cpu - start.own_cpu >= 0.9  # the child's second is counted as this process's own
    assert other is not None and other < 0.3, other


def _busy_snapshot() -> dict:
    """The synthetic run without its failures, every cell measured while other processes held the cores."""
    snap = make_snapshot()
    snap["variants"] = [{**v, "fidelity": {**(v.get("fidelity") or {}), "ok": True}} for v in snap["variants"]
                        if v["status"] == "ok"]
    snap["cells"] = [{**c, "contended": True, "other_cores": 0.8} for c in snap["cells"] if c["status"] == "ok"]
    return snap


def test_run_strict_exits_3_when_most_cells_were_busy(tmp_path, monkeypatch, capsys) -> None:
    from prunebench.cli import run_cmd

    def fake_run(config, run_dir, *, cache_dir, progress=None, executor=None, **kw):
        fill_store(run_dir.root, _busy_snapshot())
        return RunOutcome(run_dir=run_dir.root)

    monkeypatch.setattr(run_cmd, "execute_run", fake_run)
    args = ["run", "--model", "small", "--quick", "--batch-sizes", "1", "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--out", str(tmp_path / "a"), "--strict"]) == 3
    out = capsys.readouterr().out
    assert "Machine busy: of 17 timed cells, 17 contended" in out and "--strict: most timed cells" in out
    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # without --strict: reported, not failed


def test_bench_strict_exits_3_when_most_cells_were_busy(monkeypatch) -> None:
    from prunebench.cli import bench_cmd

    real = bench_cmd.sweep

    def busy_sweep(*args, **kwargs):
        return [replace(c, contended=True) for c in real(*args, **kwargs)]

    monkeypatch.setattr(bench_cmd, "sweep", busy_sweep)
    argv = ["bench", "small", "--batch-sizes", "1", "--seq-len", "8", "--budget", "quick", "--min-time", "0",
            "--max-time", "0.05", "--no-memory", "--threads", "1", "--allow-busy"]
    assert main([*argv, "--strict"]) == 3
    assert main(argv) == 0
