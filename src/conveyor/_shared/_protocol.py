"""What a manager's clients and its server say to each other, and how they meet.

One ``SOCK_SEQPACKET`` connection per client thread; each request is one message and
gets exactly one reply, in order. A message is a pickled tuple in the queues' wire
format (``_queues/_wire.py``): small ones inline, large ones and big buffers in memfds
that travel with the message, so a 100 MB value costs no more framing than a counter.

A connection starts with a challenge: the server sends ``CHALLENGE_BYTES`` random
bytes, the client answers with their HMAC under its ``multiprocessing`` authkey, and
the server replies ``WELCOME`` or ``REFUSED`` (and closes). Only processes holding the
owner's key get in; the socket itself lives in a directory only this user can enter.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import socket
from typing import Any

from .._queues._wire import MESSAGE_MAX_BYTES, decode_payload, encode
from .._transport._fds import ANCILLARY_BYTES, close_fds, received_fds, rights

CHALLENGE_BYTES = 32
WELCOME = b"welcome"
REFUSED = b"refused"


class Op(enum.IntEnum):
    """What a request asks of the server (the first element of its tuple)."""

    CREATE = 1  # (CREATE, typeid, args, kwargs, released) -> a proxy's oid
    CALL = 2  # (CALL, oid, method, args, kwargs, released) -> the method's result
    RELEASE = 3  # (RELEASE, released) -> None: this process dropped its proxies of these
    HOLD = 4  # (HOLD, oids) -> those still there: proxies this process got uncounted
    STATS = 5  # (STATS,) -> ManagerStats
    SHUTDOWN = 6  # (SHUTDOWN,) -> None, then the server exits
    ABANDON = 7  # (ABANDON,) -> ABANDONED: the client gave up waiting for its last reply


class Status(enum.IntEnum):
    """How a request ended (the first element of its reply)."""

    OK = 0  # (OK, value)
    RAISED = 1  # (RAISED, exception): the method raised; the caller raises it too
    ABANDONED = 2  # (ABANDONED, None): the last request is withdrawn or undone


def answer(authkey: bytes, challenge: bytes) -> bytes:
    return hmac.new(authkey, challenge, hashlib.sha256).digest()


def send_message(sock: socket.socket, obj: Any) -> None:
    """Send ``obj`` as one message (blocking until the socket takes it)."""
    parts, fds = encode(obj)
    try:
        sock.sendmsg(parts, rights(fds))
    finally:
        close_fds(fds)


class Receiver:
    """Receives whole messages on one socket into a buffer of its own."""

    def __init__(self) -> None:
        self._scratch = memoryview(bytearray(MESSAGE_MAX_BYTES))
        self._into = [self._scratch]

    def receive(self, sock: socket.socket, flags: int = 0) -> Any:
        """The next message's object; ``EOFError`` once the other end is gone.

        With ``socket.MSG_DONTWAIT`` in ``flags``, ``BlockingIOError`` if none waits.
        """
        n, ancdata, msg_flags, _ = sock.recvmsg_into(self._into, ANCILLARY_BYTES, flags)
        if n == 0:
            raise EOFError("the other end closed the connection")
        fds = received_fds(ancdata, msg_flags, "a manager message")
        scratch = self._scratch
        return decode_payload(scratch[0], bytes(scratch[1:n]), fds)


__all__ = [
    "CHALLENGE_BYTES",
    "REFUSED",
    "WELCOME",
    "Op",
    "Receiver",
    "Status",
    "answer",
    "send_message",
]
