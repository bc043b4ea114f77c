"""Passing file descriptors between processes over a Unix socket (``SCM_RIGHTS``).

The socket transport carries the descriptors of shared-memory segments (``_shm.py``)
with a frame; these helpers build and read the ancillary data, and close what is left.
"""

from __future__ import annotations

import array
import os
import socket
from typing import Any

# Descriptors one frame may carry (the kernel's own limit is 253); the worker's reply
# says which of them it let go of in a 64-bit mask.
MAX_FDS_PER_FRAME = 64
PASSING_AVAILABLE = hasattr(socket, "CMSG_SPACE") and hasattr(socket, "SCM_RIGHTS")


def close_fds(fds: list[int]) -> None:
    """Close each descriptor; one already closed is no error."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def fds_from_ancillary(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in a ``recvmsg`` result's ancillary data."""
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - len(data) % arr.itemsize])
            fds.extend(arr)
    return fds


_TRUNCATED = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)


def received_fds(ancdata: list[tuple[int, int, bytes]], msg_flags: int, what: str) -> list[int]:
    """The descriptors a ``recvmsg`` brought; ``OSError``, with them closed, if the
    message or its descriptors arrived cut short (``what`` names the message)."""
    fds = fds_from_ancillary(ancdata) if ancdata else []
    if msg_flags & _TRUNCATED:
        close_fds(fds)
        raise OSError(f"conveyor: {what} arrived truncated (a bug: please report it)")
    return fds


def rights(fds: list[int]) -> list[tuple[int, int, Any]]:
    """Ancillary data that sends ``fds`` with a ``sendmsg``."""
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []


ANCILLARY_BYTES = socket.CMSG_SPACE(MAX_FDS_PER_FRAME * 4) if PASSING_AVAILABLE else 0
