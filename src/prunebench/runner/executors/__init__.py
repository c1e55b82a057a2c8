"""Where a run's prepare and timing units execute: ``local`` (in this process, the default) or ``ray``.

See :mod:`prunebench.runner.executors.base` for the interface and
:mod:`prunebench.runner.executors.ray_executor` for scheduling, retries and how models travel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prunebench.registry import Registry
from prunebench.runner.executors.base import Executor, LocalExecutor, Unit


def _local(address: str | None = None, **_: Any) -> Executor:
    if address is not None:
        raise ValueError("--ray-address needs --executor ray")
    return LocalExecutor()


def _ray(address: str | None = None, **kwargs: Any) -> Executor:
    from prunebench.runner.executors.ray_executor import RayExecutor  # Ray is an optional extra

    return RayExecutor(address, **kwargs)


EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor")
EXECUTORS.add("local", _local)
EXECUTORS.add("ray", _ray)


def make_executor(name: str, address: str | None = None, **kwargs: Any) -> Executor:
    """The executor registered as ``name`` (a ValueError lists the valid names)."""
    return EXECUTORS.get(name)(address, **kwargs)


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "Unit", "make_executor"]
