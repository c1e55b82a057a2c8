"""Exclusive file locks (``fcntl.flock``) that name their holder.

A flock belongs to an open file and the kernel drops it when the holding process dies, ``kill -9``
included, so a lock left behind by a killed process never blocks anyone: the next process simply gets it.
The holder writes its pid into the lock file only so that a refused process can say who holds it, and
clears it on a clean release, so a pid found on acquisition means the previous holder died while holding it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prunebench.errors import PrunebenchError

logger = logging.getLogger(__name__)

#: How long a refused process waits for the holder to write its pid (it does so right after locking).
_PID_WAIT_S = 1.0


class LockBusy(PrunebenchError):
    """The lock is held by another process (``holder`` is its pid, None if it could not be read)."""

    def __init__(self, path: Path, holder: int | None) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"{path} is locked by {'pid ' + str(holder) if holder else 'another process'}")


def _read_pid(fd: int) -> int | None:
    raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(raw) if raw.isdigit() else None


def _holder_pid(fd: int) -> int | None:
    """The holder's pid, waiting briefly: it may have locked the file but not yet written its pid."""
    deadline = time.monotonic() + _PID_WAIT_S
    while True:
        pid = _read_pid(fd)
        if pid is not None or time.monotonic() > deadline:
            return pid
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_holder(path: str | Path) -> int | None:
    """The pid a lock file names when that process is alive (and is not this one), without creating, locking or
    changing anything: a read-only look for messages before any work (the lock itself decides who runs). A clean
    release clears the pid, and a dead holder's pid names no live process, so both read as None.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        pid = _read_pid(fd)
    finally:
        os.close(fd)
    return pid if pid is not None and pid != os.getpid() and pid_alive(pid) else None


@contextmanager
def exclusive_lock(path: str | Path, *, wait: bool) -> Iterator[int | None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    The holder may remove ``path`` inside the block (a refused run removes the ``run.lock`` it created): a
    process waiting for the removed file finds that out once it gets it, and locks the name's new file instead.

    Args:
        path: the lock file; its folder must exist.
        wait: block until the holder releases it; False raises :class:`LockBusy` at once.

    Yields:
        The pid of an earlier holder that died while holding the lock (its pid was never cleared), else None.

    Raises:
        LockBusy: ``wait`` is False and another process holds the lock.
        PrunebenchError: the lock file cannot be created or opened.
    """
    lock_path = Path(path)
    fd = _open_locked(lock_path, wait)
    try:
        previous = _read_pid(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield previous if previous != os.getpid() else None
        finally:
            os.ftruncate(fd, 0)  # a clean release: the next holder finds no pid, so nothing was "taken over"
    finally:
        os.close(fd)  # closing the file releases the flock


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (its holder may have removed it meanwhile)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _open_locked(lock_path: Path, wait: bool) -> int:
    """Open ``lock_path`` (created if missing) and lock it; returns the descriptor.

    A holder may remove the lock file while it holds it (a refused run leaves no ``run.lock`` behind). A lock
    on a file that no longer has that name would lock nothing, so after each acquisition the name is checked
    against the open file, and on a mismatch the name is opened (created) again.

    Raises:
        LockBusy: ``wait`` is False and another process holds the lock.
        PrunebenchError: the lock file cannot be created, opened or locked.
    """
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PrunebenchError(f"cannot create the lock file {lock_path}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise PrunebenchError(f"cannot lock {lock_path}: {exc.strerror or exc}") from None
                if not _same_file(fd, lock_path):
                    os.close(fd)  # its holder removed it: the name is free (or names a new file) now
                    continue
                holder = _holder_pid(fd)
                if not wait:
                    raise LockBusy(lock_path, holder) from None
                logger.info("waiting for %s, held by pid %s", lock_path, holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, lock_path):
            return fd
        os.close(fd)  # its holder removed the file before releasing it: lock whatever the name holds now
