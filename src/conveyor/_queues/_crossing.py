"""Where a queue's and a pipe's kernel objects live and how another process takes them.

FIFOs are made in a directory only this user can enter, removed when the process that
made it exits; descriptors cross through ``multiprocessing``'s resource sharer (unless
inherited), which serves only processes holding the sender's authkey.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from multiprocessing import AuthenticationError
from typing import Any

from .._transport._fds import close_fds
from ..errors import AccessRefusedError


def take_descriptors(shared: list[Any], what: str) -> list[int]:
    """The descriptors ``reduction.DupFd`` objects stand for, in this process.

    Received through the sender's resource sharer unless inherited; a process without
    the sender's authkey is refused, which is made a clear error here.
    """
    fds: list[int] = []
    try:
        for dup in shared:
            fds.append(dup.detach())
    except AuthenticationError as exc:
        close_fds(fds)
        raise AccessRefusedError(
            f"cannot take {what}: the process that sent it refused this one (pid "
            f"{os.getpid()}), which does not hold its multiprocessing authkey; only "
            "processes it started (or that were given its key) may share its queues "
            "and pipes, so not a Dask worker or an unrelated interpreter"
        ) from exc
    except BaseException:
        close_fds(fds)
        raise
    return fds


class _PrivateDir:
    """A directory only this user can enter, for the FIFOs; removed when we exit."""

    path: str | None = None
    pid = 0

    @classmethod
    def get(cls) -> str:
        if cls.path is None or cls.pid != os.getpid():
            cls.path = tempfile.mkdtemp(prefix="conveyor-queues-")  # mode 0700
            cls.pid = os.getpid()
            atexit.register(_remove_dir, cls.path, cls.pid)
        return cls.path

    @classmethod
    def forget(cls) -> None:
        cls.path, cls.pid = None, 0


def private_dir() -> str:
    """This process's private directory for FIFOs (made on first use)."""
    return _PrivateDir.get()


def forget_private_dir() -> None:
    """In a forked child: the directory is the parent's."""
    _PrivateDir.forget()


def _remove_dir(path: str, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["forget_private_dir", "private_dir", "take_descriptors"]
