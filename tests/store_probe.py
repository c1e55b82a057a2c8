"""Reading a run's SQLite store from a test while (or after) another process writes it, and killing that
process once the store holds what the test needs (the crash-and-resume tests)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path


def rows(store: Path, sql: str) -> list[tuple]:
    """All rows of ``sql`` on ``store`` (a fresh connection each time)."""
    con = sqlite3.connect(store)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def kill_when(child: subprocess.Popen, store: Path, count_sql: str, at_least: int, timeout: float,
              poll: float = 0.1) -> None:
    """SIGKILL ``child`` as soon as ``count_sql`` on ``store`` returns ``>= at_least``.

    Raises:
        AssertionError: ``child`` finished (or ``timeout`` passed) before it could be killed mid-run.
    """
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and child.poll() is None:
            try:
                if store.exists() and rows(store, count_sql)[0][0] >= at_least:
                    break
            except sqlite3.Error:
                pass  # the child may be creating the tables right now
            time.sleep(poll)
        assert child.poll() is None, "the run finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
