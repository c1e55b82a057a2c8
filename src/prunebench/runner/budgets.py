"""How much effort each stage of a run spends: resolved once from the config, so ``--quick`` is one place."""

from __future__ import annotations

from dataclasses import dataclass

from prunebench.bench import BenchSettings, bench_settings
from prunebench.config import RunConfig


@dataclass(frozen=True)
class Budgets:
    """The effort of each stage, resolved once from the config; ``--quick`` shrinks every one of them so a
    first look (and the end-to-end test) takes seconds, not minutes. None = the stage's own default."""

    train_budget: str | None
    max_files: int | None
    eval_batches: int | None
    finetune_steps: int
    iterative_steps: int
    calib_sequences: int
    bench_preset: str
    bench_min_time: float | None
    bench_max_time: float | None

    @classmethod
    def of(cls, config: RunConfig) -> Budgets:
        """The budgets of ``config`` (explicit settings win over what ``quick`` implies)."""
        if config.quick:
            return cls(train_budget=config.train_budget or "40", max_files=120,
                       eval_batches=config.eval_batches or 2, finetune_steps=min(config.finetune_steps, 3),
                       iterative_steps=min(config.iterative_steps, 2),
                       calib_sequences=min(config.calib_sequences, 8), bench_preset="quick",
                       bench_min_time=config.min_time or None, bench_max_time=config.max_time or None)
        return cls(train_budget=config.train_budget or None, max_files=None, eval_batches=config.eval_batches or None,
                   finetune_steps=config.finetune_steps, iterative_steps=config.iterative_steps,
                   calib_sequences=config.calib_sequences, bench_preset="default",
                   # Half a second per cell at least (plus 10 pairs and the +-2% CI target): the timing of
                   # 6 rows x 5 batch sizes then fits the run's time budget, small models included.
                   bench_min_time=config.min_time or 0.5, bench_max_time=config.max_time or None)


def bench_settings_for(config: RunConfig, budgets: Budgets) -> BenchSettings:
    """The harness settings of a run: the budget's preset with the run's seed, threads, device, padding and
    what to do with busy blocks."""
    return bench_settings(
        budgets.bench_preset, seed=config.seed, threads=config.threads, device=config.device,
        pad_fraction=config.pad_fraction, min_time=budgets.bench_min_time, max_time=budgets.bench_max_time,
        allow_busy=config.allow_busy,
    )
