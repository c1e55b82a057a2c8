"""The frame every run shares (runner/stages.py): the progress counter's per-stage clock and the CLI's line."""

from __future__ import annotations

from prunebench.cli.run_cmd import stage_line
from prunebench.runner.stages import Ticker


def test_ticker_charges_time_to_the_stage_whose_work_a_call_reports():
    now = iter([0.0, 1.0, 4.0, 6.0, 7.0, 17.0])  # construction, then one reading per call
    loads = iter([2.0, 5.0, 3.0, 1.0])
    seen: list[tuple[str, int, int]] = []
    cpu = iter([0.0, 2.0, 8.0, 12.0, 14.0, 34.0])  # twice the wall: two busy threads
    tick = Ticker(4, lambda stage, detail, done, total: seen.append((stage, done, total)),
                  clock=lambda: next(now), load=lambda: next(loads), cpu_clock=lambda: next(cpu))
    tick("prune", "a", 0)  # t=1: prune starts (1 s of setup before it)
    tick("prune", "a: pruned")  # t=4: prune 3
    tick("eval", "a: scored")  # t=6: eval 2
    tick("prune", "b: pruned")  # t=7: prune 1
    tick("bench", "all timed", 2)  # t=17: bench 10
    assert tick.stage_seconds == {"prune": 5.0, "eval": 2.0, "bench": 10.0}
    assert tick.stage_cpu_seconds == {"prune": 10.0, "eval": 4.0, "bench": 20.0}
    assert tick.load_max == 5.0  # read at each change of stage only (4 changes)
    assert seen[-1] == ("bench", 5, 4) and [s[1] for s in seen] == [0, 1, 2, 3, 5]


def test_stage_line_names_each_stage_and_the_load():
    line = stage_line({"data": 12.4, "bench": 300.0}, {"start": 0.5, "max": 2.25, "end": None})
    assert line.startswith("stages: data 12 s, bench 300 s; 1-minute load average: start 0.5, max 2.2")
    assert "end" not in line
    assert "unknown" in stage_line({}, {})
    assert stage_line({"prune": 10.0}, {}, {"prune": 19.6}).startswith("stages: prune 10 s (CPU 20 s);")
