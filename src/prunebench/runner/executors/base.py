"""Where a run's units of work execute: the executor interface and the in-process (local) executor.

The pipeline cuts its two expensive stages into units: "prepare variant" (prune, recovery fine-tuning,
fidelity check, save, evaluate) and "time cells" (paired timing of some cells against dense on one node
class). A unit's function hands each record it makes to ``emit``; the executor delivers every emitted item
to the driver's ``on_result`` (in-process: at once; from a Ray worker: when the unit completes). The driver
is the only writer of the results store and of the run folder, so crash safety does not depend on where a
unit ran.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol

from prunebench.results import LOCAL_NODE_CLASS

UnitKind = Literal["prepare", "time"]

#: A unit's work: ``fn(payload, emit, **shared)``, calling ``emit(item)`` per result; module-level, so that
#: it can be shipped to a worker.
UnitFn = Callable[..., None]
#: The driver's side: ``on_result(unit, item)`` for every item a unit emitted.
OnResult = Callable[["Unit", Any], None]


@dataclass(frozen=True)
class Unit:
    """One unit of work.

    Attributes:
        key: unique, human-readable name (``prepare:wanda@0.5``, ``time:local:b=8``); a remote task's name.
        kind: ``prepare`` (runs on any node) or ``time`` (holds a whole node of ``node_class`` while it runs).
        payload: small plain data the unit's function needs beside the shared objects.
        node_class: the hardware class that must run a ``time`` unit.
    """

    key: str
    kind: UnitKind
    payload: Mapping[str, Any] = field(default_factory=dict)
    node_class: str = LOCAL_NODE_CLASS


class Executor(Protocol):
    """Runs units and delivers what they emit to the driver (see the module docstring).

    Attributes:
        name: the registry key (``local``, ``ray``).
        ships_models: whether models cross process boundaries as their saved files (``{name: bytes}``)
            rather than as live objects; the pipeline then writes returned model folders itself.
    """

    name: str
    ships_models: bool

    def node_classes(self) -> list[str]:
        """The hardware classes that time cells, sorted; every class times every cell by default."""
        ...

    def node_counts(self) -> dict[str, int]:
        """How many nodes each class has (its cells are split into that many time units at most)."""
        ...

    def run(self, fn: UnitFn, units: Sequence[Unit], shared: Mapping[str, Any], on_result: OnResult) -> None:
        """Run ``fn(unit.payload, emit, **shared)`` for every unit, calling ``on_result(unit, item)`` on the
        driver for every item emitted; returns when every unit is done."""
        ...

    def close(self) -> None:
        """Release what the executor started (idempotent)."""
        ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class LocalExecutor:
    """Today's behaviour: every unit runs in this process, in order, on live objects (nothing is copied)."""

    name = "local"
    ships_models = False

    def node_classes(self) -> list[str]:
        """One class: this machine."""
        return [LOCAL_NODE_CLASS]

    def node_counts(self) -> dict[str, int]:
        """One node: this process."""
        return {LOCAL_NODE_CLASS: 1}

    def run(self, fn: UnitFn, units: Sequence[Unit], shared: Mapping[str, Any], on_result: OnResult) -> None:
        """Run each unit in turn in this process; each emitted item reaches ``on_result`` at once."""
        for unit in units:
            fn(unit.payload, functools.partial(on_result, unit), **shared)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
