"""Where a run's prepare and timing units execute: ``local`` (in this process, the default) or ``ray``.

See :mod:`prunebench.runner.executors.base` for the interface and
:mod:`prunebench.runner.executors.ray_executor` for scheduling, retries and how models travel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prunebench.registry import Registry
from prunebench.runner.executors.base import Executor, LocalExecutor, Unit


def _check_local(address: str | None = None) -> None:
    if address is not None:
        raise ValueError("--ray-address needs --executor ray")


def _local(address: str | None = None, **_: Any) -> Executor:
    _check_local(address)
    return LocalExecutor()


def _check_ray(address: str | None = None) -> None:
    from prunebench.runner.executors.ray_executor import check_ray  # Ray is an optional extra

    check_ray(address)


def _ray(address: str | None = None, **kwargs: Any) -> Executor:
    from prunebench.runner.executors.ray_executor import RayExecutor

    return RayExecutor(address, **kwargs)


EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor")
EXECUTORS.add("local", _local)
EXECUTORS.add("ray", _ray)
#: What each executor checks before a run folder exists, under the same names as :data:`EXECUTORS`.
EXECUTOR_CHECKS: Registry[Callable[[str | None], None]] = Registry("executor")
EXECUTOR_CHECKS.add("local", _check_local)
EXECUTOR_CHECKS.add("ray", _check_ray)


def make_executor(name: str, address: str | None = None, **kwargs: Any) -> Executor:
    """The executor registered as ``name`` (a ValueError lists the valid names)."""
    return EXECUTORS.get(name)(address, **kwargs)


def check_executor(name: str, address: str | None = None) -> None:
    """Refuse, in one line and before anything is created, an executor that could not start here: an unknown
    name (a ValueError lists the valid ones), an address without Ray, Ray not installed, or a cluster address
    where nothing answers (see :func:`~prunebench.runner.executors.ray_executor.check_address`)."""
    EXECUTOR_CHECKS.get(name)(address)


__all__ = ["EXECUTORS", "EXECUTOR_CHECKS", "Executor", "LocalExecutor", "Unit", "check_executor", "make_executor"]
