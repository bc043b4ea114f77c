"""The ``conveyor-supervisor`` thread: one per process pool, one ``select`` over everything.

It owns the selector: it reads every worker's socket, watches every worker's process
sentinel, flushes writes the sockets could not take at once, enforces deadlines
(``EngineEvents.tick``) and turns frames into up-calls. It is the only thread that reads
the sockets and the only one that changes the selector; other threads ask it to (a new
worker, a socket to flush) and wake it through a pipe. It ends when the engine has said
``stop`` and every worker it knows of has been reaped.
"""

from __future__ import annotations

import os
import pickle
import selectors
import threading
import time

from ..._engine._contract import EngineEvents
from ..._transport._mainscript import main_module
from ..._transport._protocol import RESULT_HEADER, MessageKind, WorkerExit
from ..._transport._results import decode_results, name_tasks_of_unpicklable_results
from ..._transport._serialize import unpack_exception
from ..._transport._shm import SegmentCache, map_fds
from ...errors import SocketClosed, WorkerInitError
from ._handle import ProcessWorker

# The supervisor wakes at least this often even with nothing to do: a cheap safety net
# so that no missed wake-up can ever turn into a hang.
MAX_POLL_S = 1.0
_WAKE, _SOCKET, _SENTINEL = "wake", "socket", "sentinel"
_DONE = MessageKind.DONE


class Supervisor:
    def __init__(
        self, events: EngineEvents, traceback_type: type[Exception], segments: SegmentCache
    ) -> None:
        self._events = events
        self._traceback_type = traceback_type
        self._segments = segments  # closed with the rest, once no worker can use them
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, (_WAKE, None))
        self._requests = threading.Lock()  # guards the three fields below
        self._new: list[ProcessWorker] = []
        self._want_write: set[ProcessWorker] = set()
        self._stopping = False
        self._live: dict[int, ProcessWorker] = {}  # by pid; the supervisor thread's own
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- requests from other threads -----------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="conveyor-supervisor", daemon=True)
        self._thread.start()

    def add(self, worker: ProcessWorker) -> None:
        with self._requests:
            self._new.append(worker)
        self.wakeup()

    def take_unstarted(self) -> list[ProcessWorker]:
        """The workers added but never seen by the thread (a start that failed)."""
        with self._requests:
            started, self._new = self._new, []
        return started

    def watch_writes(self, worker: ProcessWorker) -> None:
        with self._requests:
            self._want_write.add(worker)
        self.wakeup()

    def stop(self) -> None:
        with self._requests:
            self._stopping = True
        self.wakeup()

    def wakeup(self) -> None:
        with self._requests:
            if self._closed:
                return  # the pipe is closed; its fd number may belong to a new file now
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # a wake-up is already pending

    def join(self, timeout: float | None) -> bool:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            self.wakeup()
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # --- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        events = self._events
        events.defer_deliveries()
        try:
            deadline: float | None = None
            while not self._finished():
                self._apply_requests()
                timeout = MAX_POLL_S
                if deadline is not None:
                    timeout = min(timeout, max(0.0, deadline - time.monotonic()))
                # Wake the callers last, just before blocking (see _engine/_outbox.py).
                events.run_deferred()
                for key, mask in self._selector.select(timeout):
                    self._handle_event(key.data, mask)
                deadline = events.tick(time.monotonic())
        except BaseException as exc:
            # A bug here must fail every waiting caller loudly, never leave them hanging.
            events.on_internal_error(exc)
            raise
        finally:
            try:
                self.close()
            finally:
                events.run_deferred()

    def _finished(self) -> bool:
        with self._requests:
            return self._stopping and not self._new and not self._live

    def _apply_requests(self) -> None:
        with self._requests:
            new, self._new = self._new, []
            want_write, self._want_write = self._want_write, set()
        for worker in new:
            self._live[worker.pid or -1] = worker
            self._selector.register(worker.link.fileno(), selectors.EVENT_READ, (_SOCKET, worker))
            self._selector.register(
                worker.process.sentinel, selectors.EVENT_READ, (_SENTINEL, worker)
            )
        for worker in want_write:
            link = worker.link
            if not (link.closed or link.write_failed) and worker.pid in self._live:
                self._selector.modify(
                    worker.link.fileno(),
                    selectors.EVENT_READ | selectors.EVENT_WRITE,
                    (_SOCKET, worker),
                )

    def _handle_event(self, data: tuple[str, ProcessWorker | None], mask: int) -> None:
        kind, worker = data
        if kind == _WAKE:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            return
        assert worker is not None
        if kind == _SENTINEL:
            self._reap(worker)
            return
        if mask & selectors.EVENT_WRITE:
            self._flush(worker)
        if mask & selectors.EVENT_READ:
            self._read(worker)

    def _flush(self, worker: ProcessWorker) -> None:
        with worker.write_lock:
            try:
                done = worker.link.flush()
            except SocketClosed:
                done = True
        if done and not worker.link.closed:
            self._selector.modify(worker.link.fileno(), selectors.EVENT_READ, (_SOCKET, worker))

    def _read(self, worker: ProcessWorker) -> None:
        try:
            frames = worker.link.read_frames()
        except SocketClosed:
            self._forget_socket(worker)
            return
        for frame, fds in frames:
            self._on_frame(worker, frame, fds)
        if worker.link.closed:
            self._forget_socket(worker)

    def _forget_socket(self, worker: ProcessWorker) -> None:
        try:
            self._selector.unregister(worker.link.fileno())
        except (KeyError, ValueError):
            pass

    def _on_frame(self, worker: ProcessWorker, frame: bytes | bytearray, fds: list[int]) -> None:
        kind, chunk_id, compute_s, released = RESULT_HEADER.unpack_from(frame)
        body = memoryview(frame)[RESULT_HEADER.size :]
        events = self._events
        if kind == _DONE:
            chunk = worker.answered(released)
            values, errors = decode_results(body, self._traceback_type, map_fds(fds))
            if errors and chunk is not None:
                name_tasks_of_unpicklable_results(errors, chunk.job.fn, chunk.indices)
            events.on_chunk_done(worker.slot, chunk_id, values, errors, compute_s, len(frame))
        elif kind == MessageKind.READY:
            events.on_ready(worker.slot)
        elif kind == MessageKind.RETIRING:
            events.on_retiring(worker.slot)
        elif kind == MessageKind.INIT_FAILED:
            exc = unpack_exception(pickle.loads(body), self._traceback_type)
            events.on_cannot_start(worker.slot, WorkerInitError.initializer_raised(exc))

    def _reap(self, worker: ProcessWorker) -> None:
        if not worker.link.closed:
            # Results it sent before dying still count, even when a write to it has
            # already failed: they are in the socket, and their tasks are not the crash's.
            self._read(worker)
        self._forget_socket(worker)
        self._selector.unregister(worker.process.sentinel)
        worker.process.join(timeout=5)
        if worker.process.exitcode is None:
            # Its sentinel closed but it has not exited (it closed the descriptor itself,
            # or a child it forked holds it): it is of no use to us any more either.
            worker.kill()
            worker.process.join(timeout=5)
        exitcode = worker.process.exitcode
        worker.exited = True
        self._live.pop(worker.pid or -1, None)
        worker.close_link()
        if exitcode is not None:
            worker.process.close()
        if exitcode == WorkerExit.MAIN_WITHOUT_GUARD:
            error = WorkerInitError.main_without_guard(_main_script_name())
            self._events.on_cannot_start(worker.slot, error)
        self._events.on_worker_exit(worker.slot, exitcode)

    def close(self) -> None:
        """Kill what is left, close every descriptor (the thread's last act)."""
        if self._closed:
            return
        for worker in list(self._live.values()):
            worker.kill()
            worker.process.join(timeout=5)
            worker.close_link()
        self._live.clear()
        self._selector.close()
        self._segments.close()
        with self._requests:
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)


def _main_script_name() -> str:
    return getattr(main_module(), "__file__", None) or "the main module"


__all__ = ["Supervisor"]
