"""Process backend: worker processes, their channels, and the supervisor thread.

Threads and pipes, and who owns them:

- ``conveyor-supervisor`` (one per pool) owns the selector: it reads every worker's
  channel, watches every worker's process sentinel, flushes writes the socket could not
  take at once, and enforces deadlines. It is the only thread that reads channels and the
  only one that changes the selector.
- Caller threads write chunks straight into a worker's channel (under the engine lock) so
  a ``submit`` costs no thread hand-off on the way in.
- A wake-up pipe lets other threads interrupt the supervisor's ``select``.

Why forkserver by default: the parent has threads (the supervisor, callers), and forking a
process with threads can copy a lock held by another thread into the child, deadlocking it.
The fork server is a single-threaded process forked once; workers fork from it. It also
preloads conveyor's worker module so each worker starts in a few milliseconds.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import selectors
import threading
import time
from collections import deque
from multiprocessing.context import BaseContext
from typing import Any

from . import _worker
from ._channel import ChannelClosed, ParentEnd, make_socket_pair
from ._compat import (
    REMOTE_TRACEBACK_TYPES,
    WORKER_NAME_PREFIX,
    Flavor,
    forkserver_preload,
    hide_non_file_main,
    starting_as_worker,
)
from ._engine import MAIN_WITHOUT_GUARD_EXIT, EncodeError, Engine, Slot
from ._mainscript import MainView, main_kind
from ._scheduler import Chunk
from ._serialize import Serializer, add_note, describe_callable, loads, unpack_exception
from ._shm import AVAILABLE as SHM_AVAILABLE
from ._shm import OutOfBand, Segment, SegmentCache, map_fds
from .errors import RemoteTraceback, SerializationError

# The supervisor wakes at least this often even with nothing to do: a cheap safety net
# so that no missed wake-up can ever turn into a hang.
MAX_POLL_S = 1.0
_WAKE, _CHANNEL, _SENTINEL = "wake", "channel", "sentinel"


def default_context(flavor: Flavor = Flavor.CONVEYOR) -> BaseContext:
    """The start method a pool uses when given no ``context``.

    The drop-in classes use what the stdlib's would: the start method the program set
    with ``multiprocessing.set_start_method``, else the platform's default (fork on Linux
    up to 3.13, forkserver from 3.14), so that code written for them, such as locks made
    in the default context and passed in ``initargs``, runs unchanged.

    conveyor's own API uses forkserver, which never forks a process that has threads,
    unless the program set another method that is not the platform's default. The
    platform's default itself cannot count as a choice: multiprocessing fixes it as the
    program's method by itself the first time any spawn or forkserver process starts
    (``spawn.get_preparation_data`` calls ``get_start_method()``), so it would turn every
    pool after the first into a fork pool. See docs/architecture.md, "Start methods".
    """
    chosen = multiprocessing.get_start_method(allow_none=True)
    methods = multiprocessing.get_all_start_methods()
    platform_default = methods[0]  # documented as the platform's default
    if flavor is not Flavor.CONVEYOR:
        return multiprocessing.get_context(chosen or platform_default)
    if chosen is not None and chosen != platform_default:
        return multiprocessing.get_context(chosen)
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def resolve_context(
    context: BaseContext | str | None, flavor: Flavor = Flavor.CONVEYOR
) -> BaseContext:
    if context is None:
        ctx = default_context(flavor)
    elif isinstance(context, str):
        ctx = multiprocessing.get_context(context)
    else:
        ctx = context
    if ctx.get_start_method() == "forkserver":
        # Workers then start with conveyor already imported. '__main__' stays in the list,
        # as in the stdlib, so classes defined in the main script unpickle by reference.
        forkserver_preload(ctx, "conveyor._worker")
    return ctx


class ProcessWorker:
    """The parent's handle on one worker process."""

    def __init__(self, backend: ProcessBackend, slot: Slot) -> None:
        self.backend = backend
        self.slot = slot
        parent_sock, child_sock = make_socket_pair()
        try:
            self.process = backend.ctx.Process(  # type: ignore[attr-defined]
                target=_worker.main,
                args=(child_sock, backend.config_bytes, backend.initargs, backend.main_kind),
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
        self.channel = ParentEnd(parent_sock)
        self.write_lock = threading.Lock()
        self.exited = False
        # Shared-memory segments lent with each chunk sent, in channel order: the worker
        # answers chunks in that order, and its answer says which it has let go of.
        self.lent: deque[list[Segment]] = deque()

    def send(self, chunk: Chunk, send_function: bool) -> int:
        job = chunk.job
        function = job.func_bytes if send_function else b""
        assert function is not None
        items, oob = _encode_items(chunk, self.backend.serializer, self.backend.segments)
        header = _worker.TASK_HEADER.pack(
            _worker.RUN, chunk.id, job.func_id, int(job.mode), len(function)
        )
        nbytes = len(items) + (oob.nbytes if oob else 0)
        fds, segments = (oob.fds, oob.segments) if oob else ([], [])
        with self.write_lock:
            # Recorded before the write: the answer may be read before this thread runs on.
            self.lent.append(segments)
            try:
                flushed = self.channel.write(header + function + items, fds)
            except ChannelClosed:
                self.backend.segments.discard(self.lent.pop())
                return nbytes  # the worker is dying; its sentinel will settle the chunk
        if not flushed:
            self.backend.watch_writes(self)
        return nbytes

    def settle_lent(self, released_mask: int) -> None:
        """The worker answered a chunk: its segments it let go of can be reused."""
        try:
            segments = self.lent.popleft()
        except IndexError:
            return
        self.backend.segments.give_back(segments, released_mask)

    def forget_lent(self) -> None:
        """The worker is gone: what it was lent cannot be reused (it may be mid-write)."""
        while self.lent:
            self.backend.segments.discard(self.lent.popleft())

    def stop(self) -> None:
        header = _worker.TASK_HEADER.pack(_worker.STOP, 0, 0, 0, 0)
        with self.write_lock:
            try:
                flushed = self.channel.write(header)
            except ChannelClosed:
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
        with self.write_lock:
            self.channel.close()
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


class ProcessBackend:
    """Starts worker processes and runs the supervisor loop for one engine."""

    name = "process"
    pickles = True
    can_kill = True

    def __init__(
        self,
        context: BaseContext | str | None = None,
        *,
        initializer: Any = None,
        initargs: tuple[Any, ...] = (),
        worker_state: Any = None,
        max_tasks: int | None = None,
        max_memory: int | None = None,
        flavor: Flavor = Flavor.CONVEYOR,
    ) -> None:
        if starting_as_worker():
            # Each worker of a main module without the guard would start a pool of its
            # own and print a long traceback; it exits quietly, and the parent says why.
            os._exit(MAIN_WITHOUT_GUARD_EXIT)
        self.ctx = resolve_context(context, flavor)
        method = self.ctx.get_start_method()
        self.main_kind = main_kind(method)
        self.serializer = Serializer(MainView(self.main_kind))
        self.initargs = tuple(initargs)
        self.traceback_type = REMOTE_TRACEBACK_TYPES.get(flavor, RemoteTraceback)
        config = _worker.WorkerConfig(
            initializer=initializer,
            worker_state=worker_state,
            max_tasks=max_tasks,
            max_memory=max_memory,
            pool_pid=os.getpid(),
            start_method=self.ctx.get_start_method(),
            flavor=flavor,
        )
        try:
            self.config_bytes = self.serializer.dumps_by_value(config)
        except Exception as exc:
            add_note(exc, "conveyor: cannot pickle the pool's initializer or worker_state")
            raise
        self.engine: Engine | None = None
        self.segments = SegmentCache()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, (_WAKE, None))
        self._new: list[ProcessWorker] = []
        self._want_write: set[ProcessWorker] = set()
        self._requests = threading.Lock()
        self._live: dict[int, ProcessWorker] = {}  # by pid
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- Backend interface -------------------------------------------------------------

    def start(self, engine: Engine) -> None:
        self.engine = engine
        self._thread = threading.Thread(target=self._run, name="conveyor-supervisor", daemon=True)
        self._thread.start()

    def dump_function(self, fn: Any) -> bytes:
        return self.serializer.dumps_function(fn)

    def spawn(self, slot: Slot) -> ProcessWorker:
        worker = ProcessWorker(self, slot)
        with self._requests:
            self._new.append(worker)
        self.wakeup()
        return worker

    def watch_writes(self, worker: ProcessWorker) -> None:
        with self._requests:
            self._want_write.add(worker)
        self.wakeup()

    def wakeup(self) -> None:
        with self._requests:
            if self._closed:
                return  # the pipe is closed; its fd number may belong to a new file now
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # a wake-up is already pending

    def shutdown(self, timeout: float | None) -> bool:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            self.wakeup()
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def abort_start(self) -> None:
        """Undo a start that failed part-way: stop the workers already started."""
        with self._requests:
            started, self._new = self._new, []
        for worker in started:
            worker.discard()
        self._close_all()

    # --- the supervisor loop -----------------------------------------------------------

    def _run(self) -> None:
        engine = self.engine
        assert engine is not None
        engine.defer_deliveries()
        try:
            deadline: float | None = None
            while not self._finished(engine):
                self._apply_requests()
                timeout = MAX_POLL_S
                if deadline is not None:
                    timeout = min(timeout, max(0.0, deadline - time.monotonic()))
                # Wake the callers last, just before blocking (Engine.defer_deliveries).
                engine.run_deferred()
                for key, mask in self._selector.select(timeout):
                    self._handle_event(key.data, mask)
                deadline = engine.tick(time.monotonic())
        except BaseException as exc:
            # A bug here must fail every waiting caller loudly, never leave them hanging.
            engine.on_internal_error(exc)
            raise
        finally:
            try:
                self._close_all()
            finally:
                engine.run_deferred()

    def _finished(self, engine: Engine) -> bool:
        from ._engine import EngineState

        with self._requests:
            pending_new = bool(self._new)
        done_states = (EngineState.STOPPING, EngineState.TERMINATED, EngineState.BROKEN)
        return engine.state in done_states and not self._live and not pending_new

    def _apply_requests(self) -> None:
        with self._requests:
            new, self._new = self._new, []
            want_write, self._want_write = self._want_write, set()
        for worker in new:
            self._live[worker.pid or -1] = worker
            self._selector.register(
                worker.channel.fileno(), selectors.EVENT_READ, (_CHANNEL, worker)
            )
            self._selector.register(
                worker.process.sentinel, selectors.EVENT_READ, (_SENTINEL, worker)
            )
        for worker in want_write:
            if not worker.channel.closed and worker.pid in self._live:
                self._selector.modify(
                    worker.channel.fileno(),
                    selectors.EVENT_READ | selectors.EVENT_WRITE,
                    (_CHANNEL, worker),
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
                done = worker.channel.flush()
            except ChannelClosed:
                done = True
        if done and not worker.channel.closed:
            self._selector.modify(worker.channel.fileno(), selectors.EVENT_READ, (_CHANNEL, worker))

    def _read(self, worker: ProcessWorker) -> None:
        try:
            frames = worker.channel.read_frames()
        except ChannelClosed:
            self._forget_channel(worker)
            return
        for frame, fds in frames:
            self._on_frame(worker, frame, fds)
        if worker.channel.closed:
            self._forget_channel(worker)

    def _forget_channel(self, worker: ProcessWorker) -> None:
        try:
            self._selector.unregister(worker.channel.fileno())
        except (KeyError, ValueError):
            pass

    def _on_frame(self, worker: ProcessWorker, frame: bytes | bytearray, fds: list[int]) -> None:
        engine = self.engine
        assert engine is not None
        kind, chunk_id, compute_s, released = _worker.RESULT_HEADER.unpack_from(frame)
        body = memoryview(frame)[_worker.RESULT_HEADER.size :]
        if kind == _worker.DONE:
            worker.settle_lent(released)
            values, errors = _decode_results(body, self.traceback_type, fds)
            engine.on_chunk_done(worker.slot, chunk_id, values, errors, compute_s, len(frame))
        elif kind == _worker.READY:
            engine.on_ready(worker.slot)
        elif kind == _worker.RETIRING:
            engine.on_retiring(worker.slot)
        elif kind == _worker.INIT_FAILED:
            packed = pickle.loads(body)
            engine.on_init_failed(worker.slot, unpack_exception(packed, self.traceback_type))

    def _reap(self, worker: ProcessWorker) -> None:
        engine = self.engine
        assert engine is not None
        if not worker.channel.closed:
            self._read(worker)  # results it sent before dying still count
        self._forget_channel(worker)
        self._selector.unregister(worker.process.sentinel)
        worker.process.join(timeout=5)
        exitcode = worker.process.exitcode
        worker.exited = True
        self._live.pop(worker.pid or -1, None)
        with worker.write_lock:  # a caller thread may be writing to it right now
            worker.channel.close()
            worker.forget_lent()
        worker.process.close()
        engine.on_worker_exit(worker.slot, exitcode)

    def _close_all(self) -> None:
        if self._closed:
            return
        for worker in list(self._live.values()):
            worker.kill()
            worker.process.join(timeout=5)
            with worker.write_lock:
                worker.channel.close()
                worker.forget_lent()
        self._live.clear()
        self._selector.close()
        self.segments.close()
        with self._requests:
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)


def _decode_results(
    body: memoryview, traceback_type: type[Exception], fds: list[int]
) -> tuple[list[Any], dict[int, BaseException]]:
    try:
        values, packed = loads(body, map_fds(fds))
    except BaseException as exc:  # even SystemExit from a hostile __reduce__: never let
        # it end the supervisor thread, which would leave every caller waiting forever
        error = SerializationError(f"cannot unpickle a task's result in the parent: {exc!r}")
        error.__cause__ = exc
        return [], {-1: error}
    if not packed:
        return values, {}
    return values, {pos: unpack_exception(p, traceback_type) for pos, p in packed.items()}


__all__ = ["ProcessBackend", "default_context", "resolve_context"]
