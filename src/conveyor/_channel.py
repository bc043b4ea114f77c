"""The wire between the parent and one worker process: length-prefixed frames on a socket.

Each worker has its own socket pair, so the parent always knows which worker a message
came from and which tasks a dead worker held (no shared queue, no lock held across
processes). The parent side is non-blocking and buffered: the supervisor thread never
blocks on a write, which is what makes the parent/worker deadlock of "both sides writing
a large message" impossible. The worker side is plain blocking I/O.

Frame: 8-byte little-endian payload length, then the payload (a pickle).
"""

from __future__ import annotations

import socket
import struct
from collections import deque

_HEADER = struct.Struct("<Q")
HEADER_BYTES = _HEADER.size
# Read in large gulps: a frame of a few MB arrives in a handful of system calls.
READ_BYTES = 1 << 20


class ChannelClosed(EOFError):
    """The other end of the channel is gone."""


def make_socket_pair() -> tuple[socket.socket, socket.socket]:
    parent, child = socket.socketpair()
    for sock in (parent, child):
        # Bigger kernel buffers let a whole chunk of small tasks sit in the socket while
        # the worker runs the previous one.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return parent, child


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


class ParentEnd:
    """Parent side of a worker's channel: non-blocking, with an outgoing buffer.

    ``write`` may be called from any thread under the caller's lock; ``flush`` and
    ``read_frames`` are called by the supervisor thread.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._out: deque[memoryview] = deque()
        self._in = bytearray()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    def write(self, payload: bytes) -> bool:
        """Queue a frame and send what the socket takes now; True if all of it went out."""
        if self.closed:
            raise ChannelClosed("channel closed")
        header = _HEADER.pack(len(payload))
        if not self._out and len(payload) < 65536:
            # The common small-message case: one system call, no copy kept.
            self._out.append(memoryview(header + payload))
        else:
            self._out.append(memoryview(header))
            self._out.append(memoryview(payload))
        return self.flush()

    def flush(self) -> bool:
        """Send buffered bytes until the socket would block; True when the buffer is empty."""
        out = self._out
        while out:
            head = out[0]
            try:
                sent = self.sock.send(head)
            except BlockingIOError:
                return False
            except OSError as exc:
                self.closed = True
                raise ChannelClosed(str(exc)) from exc
            if sent == len(head):
                out.popleft()
            else:
                out[0] = head[sent:]
                return False
        return True

    def read_frames(self) -> list[bytes]:
        """Read what is available; return the complete frames. Raises ChannelClosed on EOF."""
        buf = self._in
        while True:
            try:
                data = self.sock.recv(READ_BYTES)
            except BlockingIOError:
                break
            except OSError as exc:
                self.closed = True
                raise ChannelClosed(str(exc)) from exc
            if not data:
                self.closed = True
                frames = self._split(buf)
                if frames:
                    return frames
                raise ChannelClosed("worker closed its channel")
            buf += data
            if len(data) < READ_BYTES:
                break
        return self._split(buf)

    @staticmethod
    def _split(buf: bytearray) -> list[bytes]:
        frames = []
        offset = 0
        end = len(buf)
        while end - offset >= HEADER_BYTES:
            (size,) = _HEADER.unpack_from(buf, offset)
            start = offset + HEADER_BYTES
            if end - start < size:
                break
            frames.append(bytes(buf[start : start + size]))
            offset = start + size
        if offset:
            del buf[:offset]
        return frames

    def close(self) -> None:
        self.closed = True
        self._out.clear()
        self.sock.close()


class WorkerEnd:
    """Worker side of the channel: blocking reads and writes of whole frames."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._header = bytearray(HEADER_BYTES)

    def recv(self) -> bytes:
        self._read_exact_into(memoryview(self._header))
        (size,) = _HEADER.unpack(self._header)
        body = bytearray(size)
        self._read_exact_into(memoryview(body))
        return bytes(body) if size < 65536 else body  # type: ignore[return-value]

    def _read_exact_into(self, view: memoryview) -> None:
        while len(view):
            n = self.sock.recv_into(view)
            if n == 0:
                raise ChannelClosed("parent closed the channel")
            view = view[n:]

    def send(self, payload: bytes) -> None:
        header = _HEADER.pack(len(payload))
        if len(payload) < 65536:
            self.sock.sendall(header + payload)
        else:
            self.sock.sendall(header)
            self.sock.sendall(payload)
