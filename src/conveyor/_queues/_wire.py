"""What one queued item looks like on the wire: a message of a ``SOCK_SEQPACKET`` socket.

The kernel delivers a message whole or not at all, to exactly one reader, so a process
killed inside ``put`` or ``get`` can neither tear a message nor hold a lock: there is
none. An item is pickled (protocol 5, multiprocessing's reducers) by the caller of
``put``, so a pickling error reaches it at once. Buffers of 1 MiB or more (NumPy arrays)
go out of band in memfds, as for the pools (``_transport/_shm.py``); a pickle too large
for a message goes in a memfd of its own. Descriptors travel with their message
(``SCM_RIGHTS``), so nothing has a name and nothing can leak: the kernel frees a memfd
when its last descriptor and mapping are gone, whoever crashed.

Message: one byte (``INLINE`` or ``IN_MEMFD``), then the pickle (inline) or nothing; sent
as two parts of one ``sendmsg``, so the pickle is never copied to prepend the byte.
A pipe's ``send_bytes`` sends bytes as they are, the same way (``RAW``, ``RAW_IN_MEMFD``).
"""

from __future__ import annotations

import copyreg
import io
import mmap
import pickle
import threading
from collections import ChainMap
from typing import Any

from .._compat import forking_reducers
from .._transport._fds import close_fds
from .._transport._shm import AVAILABLE as SHM_AVAILABLE
from .._transport._shm import OutOfBand, map_fds, to_memfd

INLINE = b"\x00"
IN_MEMFD = b"\x01"
IN_MEMFD_KIND = IN_MEMFD[0]
RAW = b"\x02"
RAW_IN_MEMFD = b"\x03"
# The largest message a receiver takes: its scratch buffer, allocated once per thread.
# A larger message would arrive truncated, so a pickle that would make one goes in a
# memfd instead; the socket's buffer (at least 2 x 208 KiB on Linux) holds it whole.
MESSAGE_MAX_BYTES = 256 << 10
INLINE_MAX_BYTES = MESSAGE_MAX_BYTES - len(INLINE)
PROTOCOL = 5


class _Pickler(pickle.Pickler):
    """The stdlib's C pickler with what multiprocessing's pickler passes (sockets,
    connections, libraries' registrations), read live, and out-of-band buffers."""

    dispatch_table = ChainMap(forking_reducers(), copyreg.dispatch_table)  # type: ignore[arg-type]


class _Encoder:
    """A pickler per thread, reused: making one, with its buffer and its out-of-band
    collector, cost more than pickling a small item. Its buffer starts with the
    ``INLINE`` byte, so what it holds after a dump is the whole message."""

    __slots__ = ("buffer", "busy", "oob", "pickler")

    def __init__(self) -> None:
        self.buffer = io.BytesIO(INLINE)
        self.buffer.seek(1)
        self.pickler = _Pickler(self.buffer, PROTOCOL, buffer_callback=self._out_of_band)
        self.oob: OutOfBand | None = None
        self.busy = False  # a __reduce__ that puts while being pickled gets a fresh one

    def _out_of_band(self, buffer: pickle.PickleBuffer) -> bool:
        if self.oob is None:
            self.oob = OutOfBand()
        return self.oob(buffer)


_per_thread = threading.local()


def encode(obj: Any) -> tuple[list[Any], list[int]]:
    """The message for ``obj``, in parts, and the descriptors to send with it (the caller
    owns them)."""
    message = encode_message(obj)
    if type(message) is bytes:
        return [message], []
    return message  # type: ignore[return-value]


def encode_message(obj: Any) -> bytes | tuple[list[Any], list[int]]:
    """``encode``, with the common item (one message, no descriptors) as its bytes."""
    try:
        encoder: _Encoder = _per_thread.encoder
    except AttributeError:
        encoder = _per_thread.encoder = _Encoder()
    if encoder.busy or not SHM_AVAILABLE:
        return _encode_fresh(obj)
    encoder.busy = True
    buffer = encoder.buffer
    try:
        encoder.pickler.dump(obj)
        message = buffer.getvalue()
    except BaseException:
        if encoder.oob is not None:
            encoder.oob.close()
            encoder.oob = None
        raise
    finally:
        buffer.seek(1)
        buffer.truncate()
        encoder.pickler.clear_memo()
        encoder.busy = False
    if encoder.oob is None and len(message) <= MESSAGE_MAX_BYTES:
        return message
    oob, encoder.oob = encoder.oob, None
    fds = oob.fds if oob is not None else []
    if len(message) <= MESSAGE_MAX_BYTES:
        return [message], fds
    return _in_memfd(memoryview(message)[1:], fds)


def _encode_fresh(obj: Any) -> tuple[list[Any], list[int]]:
    oob = OutOfBand() if SHM_AVAILABLE else None
    try:
        buffer = io.BytesIO()
        _Pickler(buffer, PROTOCOL, buffer_callback=oob).dump(obj)
    except BaseException:
        if oob is not None:
            oob.close()
        raise
    data = buffer.getbuffer()
    fds = oob.fds if oob is not None else []
    if len(data) <= INLINE_MAX_BYTES or not SHM_AVAILABLE:
        return [INLINE, data], fds
    return _in_memfd(data, fds)


def _in_memfd(pickled: memoryview, fds: list[int]) -> tuple[list[Any], list[int]]:
    """The message for a pickle too large for one: the pickle goes in a memfd."""
    try:
        pickled_fd = to_memfd(pickled)
    except BaseException:
        close_fds(fds)
        raise
    return [IN_MEMFD], [pickled_fd, *fds]


def decode(message: bytes, fds: list[int]) -> Any:
    """The item a message carries (the descriptors are closed; mappings live on)."""
    return decode_payload(message[0], memoryview(message)[1:], fds)


def decode_payload(kind: int, payload: Any, fds: list[int]) -> Any:
    """``decode`` for a message already split into its kind byte and the rest."""
    if kind == IN_MEMFD_KIND:
        pickled_fd, buffer_fds = fds[0], fds[1:]
        (pickled,) = map_fds([pickled_fd])
        try:
            return pickle.loads(pickled, buffers=map_fds(buffer_fds))
        finally:
            pickled.close()
    if fds:
        return pickle.loads(payload, buffers=map_fds(fds))
    return pickle.loads(payload)


def encode_bytes(view: memoryview) -> tuple[list[Any], list[int]]:
    """The message for raw bytes (``view`` is a flat byte view), and its descriptors."""
    if view.nbytes <= INLINE_MAX_BYTES or not SHM_AVAILABLE:
        return [RAW, view], []
    return [RAW_IN_MEMFD], [to_memfd(view)]


def decode_any(message: bytes, fds: list[int]) -> Any:
    """The object a message carries: an item, or the unpickled bytes of a raw message
    (as ``multiprocessing``'s ``recv()`` unpickles what ``send_bytes()`` sent)."""
    if message[:1] in (RAW, RAW_IN_MEMFD):
        data = message_bytes(message, fds)
        try:
            return pickle.loads(data)
        finally:
            release_bytes(data)
    return decode(message, fds)


def message_bytes(message: bytes, fds: list[int]) -> memoryview | mmap.mmap | bytes:
    """What a message carries as bytes: a raw message's, or an item's pickle (with its
    out-of-band buffers put back in band). A mapping returned is the caller's to close."""
    kind = message[:1]
    if kind == RAW or (kind == INLINE and not fds):
        return memoryview(message)[1:]
    if kind == RAW_IN_MEMFD:
        (mapping,) = map_fds(fds)
        return mapping
    buffer = io.BytesIO()
    _Pickler(buffer, PROTOCOL).dump(decode(message, fds))
    return buffer.getvalue()


def release_bytes(data: object) -> None:
    """Let go of what ``message_bytes`` returned (unmap a memfd)."""
    if isinstance(data, mmap.mmap):
        data.close()


def discard(fds: list[int]) -> None:
    """An item that will never be decoded: let its memory go."""
    close_fds(fds)


__all__ = [
    "INLINE_MAX_BYTES",
    "MESSAGE_MAX_BYTES",
    "decode",
    "decode_any",
    "decode_payload",
    "discard",
    "encode",
    "encode_bytes",
    "encode_message",
    "message_bytes",
    "release_bytes",
]
