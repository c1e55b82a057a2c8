"""The Ray executor: prepare units as Ray tasks anywhere, time units as Ray tasks that hold a whole node.

Scheduling rests on two custom resources every prunebench node advertises (``ray start --resources``):

- ``prunebench_node: 1``. A time unit asks for all of it and a prepare unit for a sliver, so Ray's own
  resource accounting guarantees that two timings never share a node and that a node never times while it
  prepares (a prepare holding any sliver leaves less than 1).
- ``prunebench_class_<NAME>: 1``, the node's hardware class. Time units of class NAME ask for a sliver of
  it, so they land on that class only; by default the pipeline times every cell on every class.

Models travel through Ray's object store, not shared storage: a prepare task returns its model folder as
``{file: bytes}`` and the driver writes it into the run folder, then commits the variant record. A cluster
of different hardware classes rarely shares a POSIX filesystem, the object store needs none, and the driver
stays the only writer of the run folder, so a killed worker can never leave half a model folder behind
(each model is a few to a hundred MiB, which the object store moves or spills to disk without trouble).

Retries: a worker that dies mid-task (killed, OOM) is retried by Ray (``max_retries``); a unit's own
failures come back as failed records and are not retried. Units in flight when the driver dies are lost
with it (Ray tasks die with their owner); ``--resume`` submits again only what the store lacks.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from prunebench.errors import PrunebenchError, install_hint
from prunebench.results import LOCAL_NODE_CLASS
from prunebench.runner.executors.base import OnResult, Unit, UnitFn

logger = logging.getLogger(__name__)

NODE_RESOURCE = "prunebench_node"
CLASS_PREFIX = "prunebench_class_"
#: What a prepare unit takes of its node's ``prunebench_node``: anything above 0 keeps timings off the node.
PREPARE_SHARE = 0.01
#: What a time unit takes of its class resource: only a constraint on where it lands.
CLASS_SHARE = 0.01
#: Retries of a unit whose worker died (Ray's own retry of system failures).
MAX_RETRIES = 3
#: Seconds a cluster address gets to accept a TCP connection before it counts as unreachable.
CONNECT_TIMEOUT_S = 5.0


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise PrunebenchError(f"the ray executor needs Ray: {install_hint('ray')}") from None
    return ray


def check_address(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise unless ``HOST:PORT`` (or ``ray://HOST:PORT``) accepts a TCP connection within ``timeout_s``.

    ``ray.init`` keeps retrying an address where nothing listens for minutes; this answers in seconds, before
    a run folder exists. No address (a one-node Ray started here), ``auto`` (Ray looks for the cluster started
    on this machine and fails at once when there is none) and forms without a port are left to Ray.

    Raises:
        PrunebenchError: nothing accepted the connection (refused, unreachable, or timed out).
    """
    host, sep, port = (address or "").removeprefix("ray://").rpartition(":")
    if not (sep and host and port.isdigit()):
        return
    if not 0 < int(port) < 65536:
        raise PrunebenchError(f"--ray-address {address}: port {port} is outside 1-65535")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        why = f"nothing answered within {timeout_s:g} s" if isinstance(exc, TimeoutError) else exc.strerror or exc
        raise PrunebenchError(f"cannot reach the Ray cluster at {address}: {why}; start it (ray start --head) "
                              "or check --ray-address") from None


def check_ray(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Everything the ray executor needs, checked before a run folder exists: Ray installed, the cluster
    address answering (:func:`check_address`).

    Raises:
        PrunebenchError: one line naming what is missing.
    """
    import_ray()
    check_address(address, timeout_s)


def node_resources(node_class: str) -> dict[str, float]:
    """The custom resources a node of ``node_class`` advertises (what ``ray start --resources`` gets)."""
    return {NODE_RESOURCE: 1.0, CLASS_PREFIX + node_class: 1.0}


def unit_resources(unit: Unit) -> dict[str, float]:
    """The custom resources a unit asks for: a whole node of its class for timing, a sliver to prepare."""
    if unit.kind == "time":
        return {NODE_RESOURCE: 1.0, CLASS_PREFIX + unit.node_class: CLASS_SHARE}
    return {NODE_RESOURCE: PREPARE_SHARE}


def unit_options(unit: Unit) -> dict[str, Any]:
    """Ray task options of a unit: its name, resources, and a GPU for timing on CUDA (Ray hides GPUs from
    tasks that do not ask for one)."""
    gpus = 1 if unit.kind == "time" and unit.payload.get("device") == "cuda" else 0
    return {"name": unit.key, "num_cpus": 1, "num_gpus": gpus, "resources": unit_resources(unit)}


def classes_of(nodes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Hardware classes of the live prunebench nodes among ``ray.nodes()`` entries, with their node counts,
    sorted by name."""
    found: dict[str, int] = {}
    for node in nodes:
        resources = node.get("Resources") or {}
        if not node.get("Alive", True) or NODE_RESOURCE not in resources:
            continue
        for key in resources:
            if key.startswith(CLASS_PREFIX):
                found[key[len(CLASS_PREFIX):]] = found.get(key[len(CLASS_PREFIX):], 0) + 1
    return dict(sorted(found.items()))


def _run_unit(fn: UnitFn, payload: dict[str, Any], keys: list[str], *values: Any) -> list[Any]:
    """The body of every Ray task: the shared objects arrive resolved as top-level arguments; what the unit
    emits goes back as the task's result."""
    items: list[Any] = []
    fn(payload, items.append, **dict(zip(keys, values, strict=True)))
    return items


class RayExecutor:
    """Runs units as Ray tasks (see the module docstring).

    Args:
        address: a running cluster (``auto`` or ``HOST:PORT``); None starts a one-node Ray on this machine
            (class ``local``) and stops it on :meth:`close`.
        num_cpus: CPUs of that one-node Ray (None = Ray's count).
        max_retries: retries of a unit whose worker died.

    Raises:
        PrunebenchError: Ray missing, the cluster unreachable, or no node advertises ``prunebench_node``.
    """

    name = "ray"
    ships_models = True

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 max_retries: int = MAX_RETRIES) -> None:
        ray = self._ray = import_ray()
        self.max_retries = max_retries
        self._owns = not ray.is_initialized()
        if self._owns:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
            if address is None:
                kwargs.update(num_cpus=num_cpus, resources=node_resources(LOCAL_NODE_CLASS))
            check_address(address)  # an address where nothing listens would hang ray.init for minutes
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise PrunebenchError(f"cannot reach the Ray cluster at {address}: {exc}".splitlines()[0]) from None
        self._task = ray.remote(_run_unit)
        if not self.node_classes():
            self.close()
            raise PrunebenchError(
                f"no node of the Ray cluster advertises the {NODE_RESOURCE} resource; start each node with "
                f"ray start --resources '{{\"{NODE_RESOURCE}\": 1, \"{CLASS_PREFIX}NAME\": 1}}'"
            )

    def node_classes(self) -> list[str]:
        """Hardware classes of the cluster's live prunebench nodes, sorted."""
        return list(self.node_counts())

    def node_counts(self) -> dict[str, int]:
        """Live prunebench nodes per hardware class."""
        return classes_of(self._ray.nodes())

    def run(self, fn: UnitFn, units: Sequence[Unit], shared: Mapping[str, Any], on_result: OnResult) -> None:
        """Submit every unit at once; deliver each unit's items as it completes; cancel the rest on an error."""
        ray = self._ray
        keys = list(shared)
        values = [ray.put(shared[k]) for k in keys]  # once, not once per unit
        pending = {}
        for unit in units:
            options = {**unit_options(unit), "max_retries": self.max_retries, "retry_exceptions": False}
            pending[self._task.options(**options).remote(fn, dict(unit.payload), keys, *values)] = unit
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    unit = pending.pop(ref)
                    for item in ray.get(ref):
                        on_result(unit, item)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Disconnect; stop the one-node Ray if this executor started it."""
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
