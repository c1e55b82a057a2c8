"""The frame of a run (:mod:`prunebench.runner.pipeline`): the outcome, the progress counter with its per-stage
clock, and what surrounds the stages (threads pinned, the run record, the final status, the report).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from prunebench.bench import environment, fingerprint_hash
from prunebench.bench.load import load_1m, own_cpu_seconds
from prunebench.config import RunConfig
from prunebench.errors import PrunebenchError
from prunebench.report import build_report
from prunebench.results import ResultStore
from prunebench.runner.rundir import RunDir

logger = logging.getLogger(__name__)

#: ``progress(stage, detail, done, total)``; ``done`` counts finished units plus the finished fraction of the
#: unit under way (see :class:`Ticker`); the CLI draws it, the library never prints.
Progress = Callable[[str, str, float, int], None]

DENSE = "dense"
#: Failures of one unit that are recorded and survived (anything else is a bug and propagates).
RECOVERABLE = (RuntimeError, ValueError, PrunebenchError)


@dataclass
class RunOutcome:
    """What a run produced: counts of units done and failed, the report files, and where the time went."""

    run_dir: Path
    failed_variants: list[str] = field(default_factory=list)
    failed_cells: int = 0
    report_files: dict[str, Path] = field(default_factory=dict)
    baseline_info: dict[str, Any] = field(default_factory=dict)
    #: Wall seconds per stage (``data``, ``train``, ``prune`` + ``eval`` interleaved, ``bench``, ...).
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: CPU seconds of this process per stage (all its threads): what a busy machine does not inflate much.
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)
    #: The 1-minute load average at the start, its highest reading at a stage change, and at the end.
    load: dict[str, float | None] = field(default_factory=dict)


class Ticker:
    """Counts units of work for the progress callback, and clocks the stages: the time since the previous call
    is charged to the stage of this call, which reports that work done (``tick("eval", "x: 0.68")`` after
    scoring x) or, with ``advance=0``, that a stage starts (the gap before it is nil), so ``prune`` and
    ``eval``, which alternate per variant, each get their own share. A long unit reports how far along it is
    with ``within`` (the fraction of that unit done, e.g. the training budget spent), so the bar moves, and its
    time estimate forms, while the unit runs rather than only when it ends.

    Args:
        total: units of work expected (the progress bar's length; stages may add to it).
        progress: the callback, or None.
        clock: wall seconds; cpu_clock: this process's CPU seconds (both injected in tests).
        load: the 1-minute load average, read at each change of stage (injected in tests).
    """

    def __init__(self, total: int, progress: Progress | None, clock: Callable[[], float] = time.perf_counter,
                 load: Callable[[], float | None] = load_1m,
                 cpu_clock: Callable[[], float] = own_cpu_seconds) -> None:
        self.total, self.done, self.progress, self.clock, self.load = total, 0, progress, clock, load
        self.cpu_clock = cpu_clock
        self.stage_seconds: dict[str, float] = {}
        self.stage_cpu_seconds: dict[str, float] = {}
        self.load_max: float | None = None
        self._stage: str | None = None
        self._since, self._cpu_since = clock(), cpu_clock()

    def __call__(self, stage: str, detail: str, advance: int = 1, within: float = 0.0) -> None:
        now, cpu = self.clock(), self.cpu_clock()
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + now - self._since
        self.stage_cpu_seconds[stage] = self.stage_cpu_seconds.get(stage, 0.0) + cpu - self._cpu_since
        if stage != self._stage:
            reading = self.load()
            if reading is not None:
                self.load_max = max(reading, self.load_max or 0.0)
        self._stage, self._since, self._cpu_since = stage, now, cpu
        self.done += advance
        # Every unit of work and every stage start goes to the run's log (run.log), not only to the progress
        # bar: a log that begins at the first distillation cannot say what the run did before it.
        logger.info("[%s] %s", stage, detail)
        if self.progress is not None:
            self.progress(stage, detail, self.done + min(max(within, 0.0), 0.999), self.total)


def start_run_record(store: ResultStore, config: RunConfig, env: dict[str, Any]) -> None:
    """Write the run record; a resumed run keeps its id and creation time."""
    run = store.get_run()
    store.start_run({
        "run_id": run["run_id"] if run else uuid.uuid4().hex[:12],
        "created": run["created"] if run else datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.to_dict(), "environment": env, "corpus": {},
    })


def run_stages(config: RunConfig, run_dir: RunDir, tick: Ticker, outcome: RunOutcome,
               stages: Callable[[ResultStore], None]) -> RunOutcome:
    """Run ``stages(store)`` inside the frame every run shares, and write the report.

    Called with the run's threads pinned (:func:`prunebench.bench.timing.pinned_threads`, recorded in the
    environment here); the run record is written (or resumed) first, its status set to ``failed`` when a stage
    raises and ``finished`` otherwise; the stage durations and the load go into ``outcome`` and the run's log
    (and the CLI prints them).
    """
    env = environment(config.device, torch.get_num_threads())
    env.setdefault("fingerprint_hash", fingerprint_hash(env))
    outcome.load = {"start": load_1m()}
    logger.info("run started in %s: model %s, %d variants, batch sizes %s, seq len %d, %d threads", run_dir.root,
                config.model, len(config.variants()), list(config.batch_sizes), config.seq_len,
                torch.get_num_threads())
    with ResultStore(run_dir.store) as store:
        start_run_record(store, config, env)
        try:
            stages(store)
        except BaseException:
            store.set_run_status("failed")
            raise
        store.set_run_status("finished")
    tick("report", "writing report.html, summary.md, results.json/csv, figures", 0)
    outcome.report_files = build_report(run_dir.root)
    tick("report", "done")
    outcome.stage_seconds = {k: round(v, 1) for k, v in tick.stage_seconds.items()}
    outcome.stage_cpu_seconds = {k: round(v, 1) for k, v in tick.stage_cpu_seconds.items()}
    outcome.load.update(max=tick.load_max, end=load_1m())
    logger.info("seconds per stage: %s; CPU seconds per stage: %s; 1-minute load average: %s",
                outcome.stage_seconds, outcome.stage_cpu_seconds, outcome.load)
    return outcome
