"""Fingerprint of the machine and software a measurement ran on, and a short hash to group results by.

Timings are only comparable on the same hardware, library build and thread count, so every result carries
:func:`environment` and its :func:`fingerprint_hash`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from prunebench._version import __version__

logger = logging.getLogger(__name__)

#: Keys that identify the code revision rather than the machine; left out of the hash so that results of
#: two commits on one machine fall into the same group.
VOLATILE_KEYS = ("prunebench_version", "git_sha")


def _cpu_model() -> str:
    """CPU model name from /proc/cpuinfo on Linux, else what ``platform`` reports."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _usable_cores() -> int | None:
    """Cores this process may run on (the affinity mask), which can be fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def git_sha(path: str | Path | None = None) -> str | None:
    """Commit of the git checkout holding ``path`` (default: this package), or None outside a checkout."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("no git sha: %s", exc)
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and sha else None


def environment(device: str | torch.device = "cpu", threads: int | None = None) -> dict[str, Any]:
    """What a measurement depends on: versions, library build, CPU, threads, device, OS.

    Args:
        device: the device measured on; its name is recorded (the GPU model for CUDA).
        threads: the thread count the measurement pinned; None records ``torch.get_num_threads()`` now.

    Returns:
        A JSON-ready dict (see the keys below); pass it to :func:`fingerprint_hash`.
    """
    dev = torch.device(device)
    device_name = _cpu_model()
    if dev.type == "cuda" and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(dev)
    return {
        "prunebench_version": __version__,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "openmp": torch.backends.openmp.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": _usable_cores(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "device": dev.type,
        "device_name": device_name,
        "os": platform.platform(),
        "machine": platform.machine(),
        "byteorder": sys.byteorder,
    }


def fingerprint_hash(env: dict[str, Any], length: int = 12) -> str:
    """Short stable hash of ``env`` without the code-revision keys (:data:`VOLATILE_KEYS`).

    Equal hashes mean the same hardware, OS, library build, device and thread counts.
    """
    stable = {k: v for k, v in env.items() if k not in VOLATILE_KEYS}
    blob = json.dumps(stable, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
