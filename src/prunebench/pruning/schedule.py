"""Sparsity schedules as pure functions of (step, steps, target)."""

from __future__ import annotations

from prunebench.pruning.spec import SCHEDULES


def sparsity_at(schedule: str, step: int, steps: int, target: float) -> float:
    """Sparsity to reach after ``step`` (1-based) of ``steps``.

    ``one_shot`` prunes to the target at step 1 (later steps only fine-tune); ``linear`` rises evenly;
    ``cubic`` is Zhu & Gupta (2017): ``s_t = target * (1 - (1 - t/steps)^3)``, fast early, slow late,
    when the remaining weights matter most. Every schedule ends exactly at ``target``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose from: {', '.join(SCHEDULES)}")
    if not 1 <= step <= steps:
        raise ValueError(f"step must lie in [1, {steps}], got {step}")
    if step == steps or schedule == "one_shot":
        return target
    frac = step / steps
    if schedule == "linear":
        return target * frac
    return target * (1.0 - (1.0 - frac) ** 3)


def schedule_values(schedule: str, steps: int, target: float) -> tuple[float, ...]:
    """The sparsity after every step, ``steps`` values, non-decreasing, the last equal to ``target``."""
    return tuple(sparsity_at(schedule, t, steps, target) for t in range(1, steps + 1))
