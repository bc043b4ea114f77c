"""The parent's handle on one worker process: start it, send it chunks, stop or kill it.

Caller threads write chunks straight into a worker's socket (under the engine lock), so
a ``submit`` costs no thread hand-off on the way in; what the socket cannot take at once
is flushed later by the supervisor. A chunk carries its function's pickle only the first
time this worker needs it (``FunctionTable`` mirrors the worker's own table).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from ..._compat import WORKER_NAME_PREFIX, hide_non_file_main
from ..._engine._jobs import Chunk
from ..._engine._states import Slot
from ..._transport._protocol import TASK_HEADER, MessageKind
from ..._transport._serialize import Serializer, add_note
from ..._transport._shm import AVAILABLE as SHM_AVAILABLE
from ..._transport._shm import OutOfBand, Segment, SegmentCache
from ..._transport._socket import ParentEnd, make_socket_pair
from ...errors import EncodeError, SocketClosed, describe_callable
from ._shipping import FunctionTable, Shipped

if TYPE_CHECKING:
    from ._backend import ProcessBackend

_RUN = MessageKind.RUN
_STOP_FRAME = TASK_HEADER.pack(MessageKind.STOP, 0, 0, 0, 0)


class ProcessWorker:
    """One worker process, its socket, and what the parent lent it."""

    def __init__(self, backend: ProcessBackend, slot: Slot) -> None:
        self.backend = backend
        self.slot = slot
        self.host: str | None = None
        parent_sock, child_sock = make_socket_pair()
        try:
            self.process = backend.ctx.Process(  # type: ignore[attr-defined]
                target=backend.entry_point,
                args=(
                    child_sock,
                    backend.config_bytes,
                    backend.initargs,
                    backend.main_kind,
                    backend.broadcast,
                ),
                name=f"{WORKER_NAME_PREFIX}{slot.index}",
            )
            with hide_non_file_main(backend.ctx.get_start_method()):
                self.process.start()
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        self.pid: int | None = getattr(self.process, "pid", None)
        self.link = ParentEnd(parent_sock)
        self.write_lock = threading.Lock()
        self.exited = False
        self.functions = FunctionTable()  # mirror of the worker's table (True: it holds it)
        # Per chunk sent, in socket order: the chunk, and the shared-memory segments lent
        # with it. The worker answers chunks in that order, and its answer says which of
        # the segments it has let go of.
        self.sent: deque[tuple[Chunk, list[Segment]]] = deque()

    def send(self, chunk: Chunk) -> int:
        job = chunk.job
        shipped: Shipped = job.shipped
        first_time = not self.functions.touch(shipped.id)
        function = shipped.data if first_time else b""
        items, oob = _encode_items(chunk, self.backend.serializer, self.backend.segments)
        header = TASK_HEADER.pack(_RUN, chunk.id, shipped.id, int(job.mode), len(function))
        nbytes = len(items) + (oob.nbytes if oob else 0)
        fds, segments = (oob.fds, oob.segments) if oob else ([], [])
        with self.write_lock:
            # Recorded before the write: the answer may be read before this thread runs on.
            self.sent.append((chunk, segments))
            try:
                flushed = self.link.write(header + function + items, fds)
            except SocketClosed:
                self.backend.segments.discard(self.sent.pop()[1])
                return nbytes  # the worker is dying; its sentinel will settle the chunk
        if first_time:
            self.functions.put(shipped.id, True)
        if not flushed:
            self.backend.watch_writes(self)
        return nbytes

    def answered(self, released_mask: int) -> Chunk | None:
        """The worker answered its oldest chunk: the segments it let go of can be reused."""
        try:
            chunk, segments = self.sent.popleft()
        except IndexError:
            return None
        self.backend.segments.give_back(segments, released_mask)
        return chunk

    def forget_lent(self) -> None:
        """The worker is gone: what it was lent cannot be reused (it may be mid-write)."""
        while self.sent:
            self.backend.segments.discard(self.sent.popleft()[1])

    def stop(self) -> None:
        with self.write_lock:
            try:
                flushed = self.link.write(_STOP_FRAME)
            except SocketClosed:
                return
        if not flushed:
            self.backend.watch_writes(self)

    def abandon(self) -> None:
        self.kill()  # a process, unlike a thread, can be stopped

    def kill(self) -> None:
        if not self.exited:
            try:
                self.process.kill()
            except (OSError, ValueError):
                pass  # already reaped

    def discard(self) -> None:
        """Stop a worker the supervisor never saw (the pool failed while starting)."""
        self.process.terminate()
        self.process.join()
        self.exited = True
        self.close_link()

    def close_link(self) -> None:
        with self.write_lock:  # a caller thread may be writing to it right now
            self.link.close()
            self.forget_lent()


def _encode_items(
    chunk: Chunk, serializer: Serializer, segments: SegmentCache
) -> tuple[bytes, OutOfBand | None]:
    """Pickle a chunk's arguments (large buffers out of band, in shared memory).

    On failure, find which items cannot be pickled: each fails with the pickler's own
    exception, as in the stdlib, plus a note naming the task.
    """
    oob = OutOfBand(segments) if SHM_AVAILABLE else None
    try:
        return serializer.dumps(chunk.items, oob), oob
    except Exception as exc:
        first_error = exc
    failures: dict[int, BaseException] = {}
    what = describe_callable(chunk.job.fn)
    for pos, item in enumerate(chunk.items):
        try:
            serializer.dumps(item)
        except Exception as exc:
            failures[pos] = add_note(
                exc,
                f"conveyor: cannot pickle the arguments of task {chunk.indices[pos]} of {what}",
            )
    raise EncodeError(failures or {-1: first_error})


__all__ = ["ProcessWorker"]
