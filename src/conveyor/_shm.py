"""Large buffers through shared memory: pickle protocol 5 out-of-band, over memfd.

A NumPy array (or any PEP 574 buffer) of at least ``OOB_MIN_BYTES`` is not copied through
the socket. It is copied once into an anonymous memory file (``memfd_create``), whose file
descriptor travels with the frame (``SCM_RIGHTS``); the receiver maps it and the
unpickled array points straight at that memory. Nothing has a name, so nothing can leak:
the kernel frees the memory when the last descriptor and mapping are gone, whoever
crashed. Where memfd or descriptor passing is missing (not Linux), buffers stay in-band.
"""

from __future__ import annotations

import mmap
import os
import pickle
import socket
from typing import Any

# Below this, a buffer rides in the pickle: a memfd costs a few system calls.
OOB_MIN_BYTES = 1 << 20
# Descriptors one frame may carry (the kernel's own limit is 253).
MAX_FDS_PER_FRAME = 64
AVAILABLE = hasattr(os, "memfd_create") and hasattr(socket, "CMSG_SPACE")


class OutOfBand:
    """A ``buffer_callback`` for pickle: large contiguous buffers become memfds.

    After ``pickle.dumps(..., buffer_callback=collector)``, ``fds`` holds one descriptor
    per out-of-band buffer, in the order the pickle refers to them, and ``nbytes`` their
    total size. The caller owns the descriptors (close them once sent).
    """

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.nbytes = 0

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        """Return True to keep ``buffer`` in-band, False once it is in a memfd."""
        if len(self.fds) >= MAX_FDS_PER_FRAME:
            return True
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: pickle copies it in-band
            return True
        if view.nbytes < OOB_MIN_BYTES:
            return True
        self.fds.append(_to_memfd(view))
        self.nbytes += view.nbytes
        return False

    def close(self) -> None:
        close_fds(self.fds)
        self.fds = []


def _to_memfd(view: memoryview) -> int:
    fd = os.memfd_create("conveyor-buffer", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, view.nbytes)
        written = 0
        while written < view.nbytes:
            written += os.pwrite(fd, view[written:], written)
    except BaseException:
        os.close(fd)
        raise
    return fd


def map_fds(fds: list[int]) -> list[memoryview]:
    """Map received memfds (closing the descriptors); the views keep the memory alive."""
    views = []
    try:
        for fd in fds:
            size = os.fstat(fd).st_size
            views.append(memoryview(mmap.mmap(fd, size)))
    finally:
        close_fds(fds)
    return views


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def fds_from_ancillary(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in a ``recvmsg`` result's ancillary data."""
    import array

    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - len(data) % arr.itemsize])
            fds.extend(arr)
    return fds


def rights(fds: list[int]) -> list[tuple[int, int, Any]]:
    """Ancillary data that sends ``fds`` with a ``sendmsg``."""
    import array

    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []


ANCILLARY_BYTES = socket.CMSG_SPACE(MAX_FDS_PER_FRAME * 4) if AVAILABLE else 0
