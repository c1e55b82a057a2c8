"""Training budgets: a number of optimizer steps, or a wall-clock duration."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$")
_SECONDS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


class BudgetKind(str, Enum):  # noqa: UP042 (StrEnum needs Python 3.11; we support 3.10)
    """What a budget counts."""

    STEPS = "steps"
    SECONDS = "seconds"


#: The longest training budgets accepted: a week of seconds, a billion steps.
MAX_BUDGET_SECONDS = 7 * 24 * 3600
MAX_BUDGET_STEPS = 10**9


@dataclass(frozen=True)
class Budget:
    """How long to train.

    A steps budget is reproducible; a seconds budget is not (the step count depends on machine load),
    so training always records the steps actually done.

    Attributes:
        kind: steps or seconds.
        value: the count of steps (an int) or of seconds.
    """

    kind: BudgetKind
    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", BudgetKind(self.kind))
        if not self.value > 0:
            raise ValueError(f"a training budget must be positive, got {self.value}")
        # A budget that cannot end is a typo, not a plan: 10^20 s was accepted and ran until killed.
        limit = MAX_BUDGET_STEPS if self.kind is BudgetKind.STEPS else MAX_BUDGET_SECONDS
        if self.value > limit:
            unit = "steps" if self.kind is BudgetKind.STEPS else "seconds (7 days)"
            raise ValueError(f"a training budget of {self.value:g} is more than the {limit:,} {unit} allowed")
        if self.kind is BudgetKind.STEPS:
            if int(self.value) != self.value:
                raise ValueError(f"a steps budget must be a whole number, got {self.value}")
            object.__setattr__(self, "value", int(self.value))

    @classmethod
    def parse(cls, text: str | int | Budget) -> Budget:
        """``"500"`` or ``500`` -> 500 steps; ``"90s"``, ``"2m"``, ``"1.5min"``, ``"1h"`` -> seconds.

        Raises:
            ValueError: anything else, with the accepted forms.
        """
        if isinstance(text, Budget):
            return text
        if isinstance(text, int) and not isinstance(text, bool):
            return cls(BudgetKind.STEPS, text)
        match = _PATTERN.match(str(text))
        if not match:
            raise ValueError(f"invalid budget {text!r}; use a step count like 500 or a duration like 90s, 2m, 1h")
        number, unit = match.groups()
        if unit is None:
            if "." in number:
                raise ValueError(f"a steps budget must be a whole number, got {text!r}")
            return cls(BudgetKind.STEPS, int(number))
        return cls(BudgetKind.SECONDS, float(number) * _SECONDS[unit])

    def fraction(self, steps_done: int, seconds_elapsed: float) -> float:
        """How much of the budget is used, in [0, 1] (1 means stop)."""
        used = steps_done if self.kind is BudgetKind.STEPS else seconds_elapsed
        return min(1.0, used / float(self.value))

    def __str__(self) -> str:
        if self.kind is BudgetKind.STEPS:
            return str(self.value)
        return f"{self.value:g}s"
