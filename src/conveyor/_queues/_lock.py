"""A lock across processes on a shared memfd: ``flock``, which the kernel releases when
its holder dies, so a process killed while holding it blocks nobody.

``flock`` belongs to an open file description, and a forked child shares its parent's:
each process opens the memfd anew (through ``/proc/self/fd``) to get one of its own.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ._pid import current_pid


class SharedLock:
    """Exclusive across the processes that map one memfd (and across their threads only
    together with a thread lock: ``flock`` is per open file description)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._own_fd: int | None = None
        self._own_pid = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        fd = self._process_fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _process_fd(self) -> int:
        pid = current_pid()
        if self._own_pid != pid:
            self._own_fd = os.open(f"/proc/self/fd/{self._fd}", os.O_RDWR | os.O_CLOEXEC)
            self._own_pid = pid
        assert self._own_fd is not None
        return self._own_fd

    def close(self) -> None:
        if self._own_fd is not None and self._own_pid == current_pid():
            os.close(self._own_fd)
        self._own_fd = None


__all__ = ["SharedLock"]
