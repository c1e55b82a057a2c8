"""Keeping the user's terminal clean of optional packages' import-time notices."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

#: Loggers that talk while optional packages import: torchao lists every CUDA kernel library it cannot load
#: on a CPU machine, and torch's pytree warns about the enums torchao registers (transformers imports torchao
#: when it is installed).
IMPORT_NOISE = ("torchao", "torch.utils._pytree")


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the given loggers to ERROR for the block (import-time notices of optional packages), then restore.

    torchao, for one, warns about every optional CUDA kernel library it cannot load on a CPU machine.
    """
    loggers = [logging.getLogger(n) for n in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, before, strict=True):
            lg.setLevel(level)
