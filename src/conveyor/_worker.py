"""The worker process: read a chunk, run it, send the results back. No policy lives here.

A worker runs ``main`` in a process started by ``_process.py``. It ignores SIGINT (the
parent decides what Ctrl-C means), exits when its channel closes (the parent is gone), when
it is told to stop, or after ``max_tasks`` tasks. Message layouts are defined here and in
``_process.py`` only.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import sys
import threading
import time
from typing import Any

from ._channel import ChannelClosed, WorkerEnd
from ._compat import Flavor, MaybeEncodingError
from ._execute import FAILED, CallMode, as_task_error, install_state, run_chunk
from ._mainscript import MainKind, start_worker
from ._serialize import (
    RESULT_NOT_PICKLED_NOTE,
    FunctionTable,
    add_note,
    dumps,
    loads,
    pack_exception,
    stdlib_dumps,
)
from ._shm import AVAILABLE as SHM_AVAILABLE
from ._shm import MappedBuffers, OutOfBand
from .errors import SerializationError

# parent -> worker: kind, chunk id, function id, call mode, function-bytes length
TASK_HEADER = struct.Struct("<BQQBQ")
RUN, STOP = 1, 2
# worker -> parent: kind, chunk id, compute seconds, and (DONE) a mask of the chunk's
# shared-memory segments the worker has let go of (see _shm.py)
RESULT_HEADER = struct.Struct("<BQdQ")
DONE, READY, INIT_FAILED, RETIRING = 1, 2, 3, 4
# Exit code of a worker whose initializer failed (distinct from a crash).
INIT_FAILED_EXIT = 3
# After answering a chunk, a worker polls for the next one this long before it sleeps
# (see WorkerEnd.recv): cheap next to a chunk's ~10 ms, and it cuts round-trip latency.
SPIN_FOR_NEXT_TASK_S = 0.0002
# How often a fork worker checks that the pool's process still lives.
PARENT_POLL_S = 0.5
# Exit code of a worker that found its pool's process gone.
PARENT_GONE_EXIT = 4


class WorkerConfig:
    """What a worker needs to start; pickled by value (cloudpickle) by the parent.

    ``initargs`` travel apart, as a ``Process`` argument pickled by multiprocessing
    itself, because objects such as ``multiprocessing.Queue`` may only be pickled while a
    process is being spawned (exactly as with the stdlib's ``Pool``).
    """

    def __init__(
        self,
        initializer: Any,
        worker_state: Any,
        max_tasks: int | None,
        max_memory: int | None,
        pool_pid: int,
        start_method: str,
        flavor: Flavor,
    ) -> None:
        self.initializer = initializer
        self.worker_state = worker_state
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        self.pool_pid = pool_pid
        self.start_method = start_method
        self.flavor = flavor


class _BrokenFunction:
    """Stands in for a function the worker could not unpickle; every call reports why."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise SerializationError(
            f"the worker could not unpickle the task's function: {self.error!r}"
        ) from self.error


def main(
    sock: Any,
    config_bytes: bytes,
    initargs: tuple[Any, ...] = (),
    kind: MainKind = MainKind.COPY,
) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # First, before anything of the parent's is unpickled into it (see _mainscript).
    start_worker(kind)
    channel = WorkerEnd(sock)
    config: WorkerConfig = loads(config_bytes)
    _die_with_parent(config.pool_pid, channel, config.start_method)
    install_state(config.worker_state, per_thread=False)
    if config.initializer is not None:
        try:
            config.initializer(*initargs)
        except BaseException as exc:
            _send(channel, INIT_FAILED, 0, 0.0, pack_exception(exc))
            sys.stdout.flush()
            os._exit(INIT_FAILED_EXIT)
    _send(channel, READY, 0, 0.0, os.getpid())
    try:
        _serve(channel, config)
    except ChannelClosed:
        pass  # the parent is gone or closed our channel: nothing left to do
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _serve(channel: WorkerEnd, config: WorkerConfig) -> None:
    functions = FunctionTable()
    max_tasks = config.max_tasks
    memory = _MemoryGauge(config.max_memory)
    encode = _ResultEncoder(config.flavor)
    done = 0
    spin_s = 0.0  # no spinning for the first task: it may be a long time coming
    while (max_tasks is None or done < max_tasks) and not memory.exceeded():
        # (the memory check runs between chunks: a chunk is never cut short)
        frame, fds = channel.recv(spin_s)
        spin_s = SPIN_FOR_NEXT_TASK_S
        kind, chunk_id, func_id, mode, func_len = TASK_HEADER.unpack_from(frame)
        if kind == STOP:
            return
        offset = TASK_HEADER.size
        if func_len:
            functions.put(func_id, _load_function(frame[offset : offset + func_len]))
        fn = functions.get(func_id)
        mapped = MappedBuffers(fds)
        try:
            items = loads(memoryview(frame)[offset + func_len :], mapped.buffers)
        except Exception as exc:
            _send(channel, DONE, chunk_id, 0.0, _unpickle_failure(exc), mapped.released_mask())
            continue
        values, errors, compute_s = run_chunk(fn, CallMode(mode), items)
        del items
        done += len(values)
        payload, result_fds = encode(values, errors)
        del values, errors  # before the mask: a result may be an argument's array
        header = RESULT_HEADER.pack(DONE, chunk_id, compute_s, mapped.released_mask())
        channel.send(payload, result_fds, prefix=header)  # no copy of a large payload
    if memory.exceeded():
        # Tell the parent first: chunks it already sent us were never started.
        _send(channel, RETIRING, 0, 0.0, None)


class _MemoryGauge:
    """Tells when this worker's resident memory passed its limit (checked between chunks).

    A leaking library then costs a worker restart, not the machine. Reading RSS costs
    ~10 us, negligible next to a chunk (sized for ~10 ms of work).
    """

    def __init__(self, limit_bytes: int | None) -> None:
        self._limit = limit_bytes
        self._process: Any = None
        if limit_bytes is not None:
            import psutil

            self._process = psutil.Process()

    def exceeded(self) -> bool:
        if self._process is None:
            return False
        return bool(self._process.memory_info().rss > self._limit)


def _load_function(data: Any) -> Any:
    try:
        return loads(data)
    except Exception as exc:
        return _BrokenFunction(exc)


def _unpickle_failure(exc: BaseException) -> tuple[Any, Any]:
    error = SerializationError(f"the worker could not unpickle the task's arguments: {exc!r}")
    return (None, {-1: pack_exception(error)})


class _ResultEncoder:
    """Pickles a chunk's results; a result that cannot be pickled fails alone.

    The stdlib-compatible pools pickle results with the stdlib pickler only, and report a
    failure as the stdlib does (``MaybeEncodingError`` for ``multiprocessing``, the
    pickler's own exception for ``concurrent.futures``); conveyor's own API also takes
    what only cloudpickle can pickle (a lambda as a result).
    """

    def __init__(self, flavor: Flavor) -> None:
        self._flavor = flavor
        self._dumps = dumps if flavor is Flavor.CONVEYOR else stdlib_dumps

    def __call__(
        self, values: list[Any], errors: dict[int, BaseException]
    ) -> tuple[bytes, list[int]]:
        """The pickled results, and the shared-memory descriptors of their large buffers."""
        packed = {pos: pack_exception(exc) for pos, exc in errors.items()} if errors else None
        if packed:
            values = [None if v is FAILED else v for v in values]
        oob = OutOfBand() if SHM_AVAILABLE else None
        try:
            return self._dumps((values, packed), oob), oob.fds if oob else []
        except BaseException:  # a hostile __reduce__ may raise anything, even SystemExit
            values, packed = self._isolate_failures(values, packed or {})
            oob = OutOfBand() if SHM_AVAILABLE else None
            return dumps((values, packed), oob), oob.fds if oob else []

    def _isolate_failures(
        self, values: list[Any], packed: dict[int, Any]
    ) -> tuple[list[Any], dict[int, Any]]:
        for pos, value in enumerate(values):
            if pos in packed:
                continue
            try:
                self._dumps(value)
            except BaseException as exc:
                values[pos] = None
                packed[pos] = pack_exception(self._describe(exc, value, pos))
        return values, packed

    def _describe(self, exc: BaseException, value: Any, pos: int) -> BaseException:
        if self._flavor is Flavor.MULTIPROCESSING:
            return MaybeEncodingError(exc, value)
        exc = as_task_error(exc)
        return add_note(exc, f"{RESULT_NOT_PICKLED_NOTE} ({type(value).__name__}) to send it back")


def _send(
    channel: WorkerEnd, kind: int, chunk_id: int, compute_s: float, body: Any, released: int = 0
) -> None:
    channel.send(RESULT_HEADER.pack(kind, chunk_id, compute_s, released) + dumps(body))


def _die_with_parent(pool_pid: int, channel: WorkerEnd, start_method: str) -> None:
    """Make sure this worker does not outlive the pool's process, even a SIGKILLed one.

    The channel's other end lives only in the pool's process (forkserver and spawn start
    workers with nothing else inherited), so the kernel flags our socket with POLLRDHUP
    the moment that process dies: a thread blocked in poll() sees it at no cost. Under
    fork, sibling workers inherit copies of the parent's ends, so we poll getppid().
    (The kernel's parent-death signal would not do: under forkserver our parent is the
    fork server, which every worker keeps alive through its inherited "alive" pipe.)
    """
    rdhup = getattr(select, "POLLRDHUP", None)
    if start_method != "fork" and rdhup is not None:
        watch = threading.Thread(target=_watch_channel, args=(channel.sock.fileno(), rdhup))
    else:
        watch = threading.Thread(target=_watch_parent_pid, args=(pool_pid, start_method))
    watch.name = "conveyor-parent-watch"
    watch.daemon = True
    watch.start()


def _watch_channel(fd: int, rdhup: int) -> None:
    poller = select.poll()
    poller.register(fd, rdhup)
    while True:
        for _, events in poller.poll():
            if events & (rdhup | select.POLLHUP | select.POLLERR):
                os._exit(PARENT_GONE_EXIT)
            if events & select.POLLNVAL:
                return  # our own main thread closed the channel: a normal exit


def _watch_parent_pid(pool_pid: int, start_method: str) -> None:
    # Under fork the pool is our parent, and getppid() changes when it dies; elsewhere
    # (no POLLRDHUP on this platform) only its pid is known.
    while os.getppid() == pool_pid if start_method == "fork" else _alive(pool_pid):
        time.sleep(PARENT_POLL_S)
    os._exit(PARENT_GONE_EXIT)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
