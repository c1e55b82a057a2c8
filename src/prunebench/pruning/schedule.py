"""Sparsity schedules as registered pure functions of the fraction of steps done.

Each schedule maps ``t/steps`` in (0, 1) to the fraction of the target reached then; every schedule ends
exactly at the target (the last step is pinned to it, whatever the function).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prunebench.registry import Registry


@dataclass(frozen=True)
class Schedule:
    """A named sparsity schedule.

    Attributes:
        description: one line for ``prunebench list schedules``.
        fraction: ``t/steps`` in (0, 1) -> fraction of the target sparsity reached after that step.
    """

    description: str
    fraction: Callable[[float], float]


SCHEDULE_REGISTRY: Registry[Schedule] = Registry("schedule")
SCHEDULE_REGISTRY.add("one_shot", Schedule("the whole target at step 1; later steps only fine-tune", lambda f: 1.0))
SCHEDULE_REGISTRY.add("linear", Schedule("rises evenly to the target", lambda f: f))
SCHEDULE_REGISTRY.add("cubic", Schedule(
    "Zhu & Gupta (2017): target * (1 - (1 - t/steps)^3), fast early, slow late", lambda f: 1.0 - (1.0 - f) ** 3))

#: Schedule names, in registry order.
SCHEDULES = tuple(SCHEDULE_REGISTRY.names())


def sparsity_at(schedule: str, step: int, steps: int, target: float) -> float:
    """Sparsity to reach after ``step`` (1-based) of ``steps``.

    ``one_shot`` prunes to the target at step 1 (later steps only fine-tune); ``linear`` rises evenly;
    ``cubic`` is Zhu & Gupta (2017): ``s_t = target * (1 - (1 - t/steps)^3)``, fast early, slow late,
    when the remaining weights matter most. Every schedule ends exactly at ``target``.
    """
    fn = SCHEDULE_REGISTRY.get(schedule).fraction  # unknown -> ValueError listing the valid names
    if not 1 <= step <= steps:
        raise ValueError(f"step must lie in [1, {steps}], got {step}")
    if step == steps:
        return target
    return target * fn(step / steps)


def schedule_values(schedule: str, steps: int, target: float) -> tuple[float, ...]:
    """The sparsity after every step, ``steps`` values, non-decreasing, the last equal to ``target``."""
    return tuple(sparsity_at(schedule, t, steps, target) for t in range(1, steps + 1))
