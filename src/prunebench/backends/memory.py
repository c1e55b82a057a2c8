"""Memory of calls that run outside torch's allocator (ONNX Runtime): the process's peak resident memory."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any


def rss_peak(fn: Callable[[], Any]) -> int | None:
    """Growth of the process's peak resident memory over one call of ``fn`` (Linux only, else None).

    Resets the kernel's high-water mark (``/proc/self/clear_refs`` = 5) so the peak belongs to this call. It
    counts every allocation (a runtime's own arenas too) but also anything else the process does meanwhile.
    """
    status, clear = Path("/proc/self/status"), Path("/proc/self/clear_refs")
    if not status.is_file() or not os.access(clear, os.W_OK):
        return None

    def read(key: str) -> int:
        match = re.search(rf"^{key}:\s+(\d+) kB", status.read_text(), re.MULTILINE)
        return int(match.group(1)) * 1024 if match else 0

    try:
        clear.write_text("5")
    except OSError:
        return None
    before = read("VmRSS")
    fn()
    return max(0, read("VmHWM") - before)
