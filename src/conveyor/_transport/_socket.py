"""The wire between the parent and one worker process: length-prefixed frames on a socket.

Each worker has its own socket pair, so the parent always knows which worker a message
came from and which tasks a dead worker held (no shared queue, no lock held across
processes). The parent side is non-blocking and buffered: the supervisor thread never
blocks on a write, which is what makes the parent/worker deadlock of "both sides writing
a large message" impossible. The worker side is plain blocking I/O.

Frame: a 12-byte header (payload length, number of file descriptors), then the payload
(a pickle). Descriptors of shared-memory buffers (see ``_shm.py``) ride on the header's
bytes as SCM_RIGHTS ancillary data.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections import deque

from ..errors import SocketClosed
from ._fds import ANCILLARY_BYTES, close_fds, fds_from_ancillary, rights

_HEADER = struct.Struct("<QI")  # payload length, number of file descriptors carried
HEADER_BYTES = _HEADER.size
# Read in gulps of this size: a frame of a few MB arrives in a few dozen system calls.
READ_BYTES = 256 << 10
_SMALL_BYTES = 65536
# A frame at least this big that has not fully arrived gets a buffer of its own size.
LARGE_FRAME_BYTES = 1 << 20

Frame = tuple[bytes | bytearray, list[int]]
_yield = getattr(os, "sched_yield", lambda: None)  # payload, and the descriptors that came with it


def make_socket_pair() -> tuple[socket.socket, socket.socket]:
    parent, child = socket.socketpair()
    for sock in (parent, child):
        # Bigger kernel buffers let a whole chunk of small tasks sit in the socket while
        # the worker runs the previous one.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return parent, child


class _Descriptors:
    """File descriptors received but not yet claimed by a frame.

    The kernel delivers descriptors in stream order, attached to the first bytes of the
    frame that sent them, so by the time a frame is complete its descriptors are here,
    in order: the frame header says how many to take.
    """

    def __init__(self) -> None:
        self._fds: deque[int] = deque()

    def add(self, ancdata: list[tuple[int, int, bytes]]) -> None:
        if ancdata:
            self._fds.extend(fds_from_ancillary(ancdata))

    def take(self, count: int) -> list[int]:
        return [self._fds.popleft() for _ in range(count)]

    def close(self) -> None:
        close_fds(list(self._fds))
        self._fds.clear()


class ParentEnd:
    """Parent side of a worker's socket: non-blocking, with an outgoing buffer.

    ``write`` may be called from any thread under the caller's lock; ``flush`` and
    ``read_frames`` are called by the supervisor thread.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        # Pieces to send, each with the descriptors to attach to its first byte.
        self._out: deque[tuple[memoryview, list[int]]] = deque()
        self._in = bytearray()
        # Received into a buffer allocated once: recvmsg(n) would allocate (and, for a
        # large n, map and unmap) n bytes on every call, tens of us per message.
        self._scratch = memoryview(bytearray(READ_BYTES))
        self._received = _Descriptors()
        # A large frame being read straight into its own buffer (see read_frames).
        self._large: bytearray | None = None
        self._large_have = 0
        self._large_fds = 0
        # Two ends that end apart. ``closed``: nothing more can be read (the worker's end
        # of stream, or this end closed). ``write_failed``: the worker stopped reading
        # (it died); what it wrote before dying is still in the socket and must be read,
        # or the answers it sent would be lost and their tasks charged with its crash.
        self.closed = False
        self.write_failed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    def write(self, payload: bytes, fds: list[int] | None = None) -> bool:
        """Queue a frame (the socket end now owns ``fds``); send what the socket takes now.

        Returns True if all of it went out.
        """
        fds = fds or []
        if self.closed or self.write_failed:
            close_fds(fds)
            raise SocketClosed("socket closed")
        header = _HEADER.pack(len(payload), len(fds))
        if not self._out and len(payload) < _SMALL_BYTES:
            # The common small-message case: one system call, no copy kept.
            self._out.append((memoryview(header + payload), fds))
        else:
            self._out.append((memoryview(header), fds))
            self._out.append((memoryview(payload), []))
        return self.flush()

    def flush(self) -> bool:
        """Send buffered bytes until the socket would block; True when the buffer is empty."""
        out = self._out
        while out:
            head, fds = out[0]
            try:
                if fds:
                    sent = self.sock.sendmsg([head], rights(fds))
                    close_fds(fds)  # the message holds its own references now
                    out[0] = (head, [])
                else:
                    sent = self.sock.send(head)
            except BlockingIOError:
                return False
            except OSError as exc:
                self._drop_unsent()
                raise SocketClosed(str(exc)) from exc
            if sent == len(head):
                out.popleft()
            else:
                out[0] = (head[sent:], [])
                return False
        return True

    def _drop_unsent(self) -> None:
        """The worker reads no more: nothing buffered for it will ever go."""
        self.write_failed = True
        for _, fds in self._out:
            close_fds(fds)
        self._out.clear()

    def read_frames(self) -> list[Frame]:
        """Read what is available; return the complete frames. Raises SocketClosed on EOF.

        A large frame is read straight into a buffer of its own size, which becomes the
        frame: a result of gigabytes is in the parent's memory once, not three times
        (the read buffer, a slice of it, and the frame).
        """
        frames: list[Frame] = []
        if self._large is not None and not self._read_large(frames):
            return frames
        buf, scratch = self._in, self._scratch
        while True:  # the common case, small frames: the hot path of every round trip
            try:
                n, ancdata, _, _ = self.sock.recvmsg_into([scratch], ANCILLARY_BYTES)
            except BlockingIOError:
                break
            except OSError as exc:
                return self._last_frames(frames, str(exc))
            self._received.add(ancdata)
            if not n:
                return self._last_frames(frames, "worker closed its socket")
            buf += scratch[:n]
            if n < READ_BYTES:
                break
            # A full gulp: more is coming, perhaps a large frame, which must get its own
            # buffer before it piles up in this one.
            frames += self._split(buf)
            if self._large is not None and not self._read_large(frames):
                return frames
        frames += self._split(buf)
        if self._large is not None:  # the split found the head of a large frame
            self._read_large(frames)
        return frames

    def _last_frames(self, frames: list[Frame], why: str) -> list[Frame]:
        """The stream has ended: the complete frames read so far still count."""
        self.closed = True
        frames += self._split(self._in)
        if frames:
            return frames  # the caller sees `closed`; a read after this raises
        raise SocketClosed(why)

    def _read_large(self, frames: list[Frame]) -> bool:
        """Read on into the large frame; True once it is complete (added to ``frames``)."""
        assert self._large is not None
        while self._large_have < len(self._large):
            n = self._receive_large()
            if n is None:
                return False  # would block: the supervisor comes back when more arrives
            if not n:
                self.closed = True
                raise SocketClosed("worker closed its socket in the middle of a frame")
        frames.append((self._large, self._received.take(self._large_fds)))
        self._large = None
        return True

    def _receive_large(self) -> int | None:
        assert self._large is not None
        try:
            n, ancdata, _, _ = self.sock.recvmsg_into(
                [memoryview(self._large)[self._large_have :]], ANCILLARY_BYTES
            )
        except BlockingIOError:
            return None
        except OSError as exc:
            self.closed = True
            raise SocketClosed(str(exc)) from exc
        self._received.add(ancdata)
        self._large_have += n
        return n

    def _split(self, buf: bytearray) -> list[Frame]:
        frames: list[Frame] = []
        offset = 0
        end = len(buf)
        view = memoryview(buf)
        try:
            while end - offset >= HEADER_BYTES:
                size, nfds = _HEADER.unpack_from(buf, offset)
                start = offset + HEADER_BYTES
                if end - start < size:
                    if size >= LARGE_FRAME_BYTES:
                        self._start_large(view[start:end], size, nfds)
                        offset = end
                    break
                frames.append((bytes(view[start : start + size]), self._received.take(nfds)))
                offset = start + size
        finally:
            view.release()
        if offset:
            del buf[:offset]
        return frames

    def _start_large(self, head: memoryview, size: int, nfds: int) -> None:
        self._large = bytearray(size)
        self._large[: len(head)] = head
        self._large_have = len(head)
        self._large_fds = nfds

    def close(self) -> None:
        self.closed = True
        self._drop_unsent()
        self._received.close()
        self.sock.close()


class WorkerEnd:
    """Worker side of the socket: blocking reads and writes of whole frames."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._in = bytearray()
        self._scratch = memoryview(bytearray(_SMALL_BYTES))
        self._received = _Descriptors()

    def recv(self, spin_s: float = 0.0) -> Frame:
        """The next frame. With ``spin_s``, poll that long before sleeping in the kernel.

        A worker that has just answered usually gets its next task within ~100 us
        (a caller doing submit/result in a loop). Catching it while still running saves
        the wake-up of a sleeping process, a quarter of a round trip on this machine.
        """
        deadline = time.perf_counter() + spin_s if spin_s else 0.0
        while True:
            frame = self._pop_frame()
            if frame is not None:
                return frame
            if deadline and time.perf_counter() < deadline:
                try:
                    self._receive(socket.MSG_DONTWAIT)
                except BlockingIOError:
                    # Polite spinning: a core the pool's own process (or a sibling) is
                    # waiting for goes to it; an idle core keeps polling for us.
                    _yield()
            else:
                self._receive(0)

    def _receive(self, flags: int) -> None:
        n, ancdata, _, _ = self.sock.recvmsg_into([self._scratch], ANCILLARY_BYTES, flags)
        self._received.add(ancdata)
        if n == 0:
            raise SocketClosed("parent closed the socket")
        self._in += self._scratch[:n]

    def _pop_frame(self) -> Frame | None:
        buf = self._in
        if len(buf) < HEADER_BYTES:
            return None
        size, nfds = _HEADER.unpack_from(buf)
        end = HEADER_BYTES + size
        if len(buf) >= end:
            payload: bytes | bytearray = bytes(buf[HEADER_BYTES:end])
            del buf[:end]
        elif size >= _SMALL_BYTES:
            # A large frame: read the rest straight into its own buffer, no second copy.
            body = bytearray(size)
            have = len(buf) - HEADER_BYTES
            body[:have] = buf[HEADER_BYTES:]
            buf.clear()
            self._read_exact_into(memoryview(body)[have:])
            payload = body
        else:
            return None
        return payload, self._received.take(nfds)

    def _read_exact_into(self, view: memoryview) -> None:
        while len(view):
            n, ancdata, _, _ = self.sock.recvmsg_into([view], ANCILLARY_BYTES)
            self._received.add(ancdata)
            if n == 0:
                raise SocketClosed("parent closed the socket")
            view = view[n:]

    def send(self, payload: bytes, fds: list[int] | None = None, prefix: bytes = b"") -> None:
        """Send one frame, ``prefix + payload``; ``fds`` (closed here once sent) travel
        with its header. The two parts are never joined: a result of gigabytes would
        cost as much again in memory.
        """
        header = _HEADER.pack(len(prefix) + len(payload), len(fds or ())) + prefix
        if fds:
            try:
                self.sock.sendmsg([header], rights(fds))
            finally:
                close_fds(fds)
            self.sock.sendall(payload)
        elif len(payload) < _SMALL_BYTES:
            self.sock.sendall(header + payload)
        else:
            self.sock.sendall(header)
            self.sock.sendall(payload)
