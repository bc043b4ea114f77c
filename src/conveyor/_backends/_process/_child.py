"""The worker process: read a chunk, run it, send the results back. No policy lives here.

A worker runs ``main`` in a process started by ``_handle.py``. It ignores SIGINT (the
parent decides what Ctrl-C means), and exits when its socket closes (the parent is gone),
when it is told to stop, or after ``max_tasks`` tasks. The messages are those of
``_transport/_protocol.py``, which the parent reads too.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from ..._queues._handles import begin_task, end_task
from ..._run import CallMode, run_chunk
from ..._state import install_shared, install_state
from ..._transport._broadcast import Broadcast
from ..._transport._mainscript import MainKind, start_worker
from ..._transport._protocol import (
    RESULT_HEADER,
    TASK_HEADER,
    MessageKind,
    WorkerConfig,
    WorkerExit,
)
from ..._transport._results import ResultEncoder, unpickle_failure
from ..._transport._serialize import dumps, load_function, loads, pack_exception
from ..._transport._shm import MappedBuffers
from ..._transport._socket import WorkerEnd
from ...errors import SocketClosed
from ._shipping import FunctionTable
from ._watchdog import die_with_parent

# After answering a chunk, a worker polls for the next one this long before it sleeps
# (see WorkerEnd.recv): cheap next to a chunk's ~10 ms, and it cuts round-trip latency.
SPIN_FOR_NEXT_TASK_S = 0.0002
# Module-level names: the loop compares every frame's kind with them.
_STOP = MessageKind.STOP
_DONE = MessageKind.DONE


def main(
    sock: Any,
    config_bytes: bytes,
    initargs: tuple[Any, ...] = (),
    kind: MainKind = MainKind.COPY,
    broadcast: Broadcast | None = None,
) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # First, before anything of the parent's is unpickled into it (see _mainscript).
    start_worker(kind)
    link = WorkerEnd(sock)
    config: WorkerConfig = loads(config_bytes)
    die_with_parent(config.pool_pid, link, config.start_method)
    install_state(config.worker_state, per_thread=False)
    install_shared(broadcast.value if broadcast is not None else None, per_thread=False)
    if config.initializer is not None:
        try:
            config.initializer(*initargs)
        except BaseException as exc:
            _send(link, MessageKind.INIT_FAILED, 0, 0.0, pack_exception(exc))
            sys.stdout.flush()
            os._exit(WorkerExit.INIT_FAILED)
    _send(link, MessageKind.READY, 0, 0.0, os.getpid())
    try:
        _serve(link, config)
    except SocketClosed:
        pass  # the parent is gone or closed our socket: nothing left to do
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _serve(link: WorkerEnd, config: WorkerConfig) -> None:
    functions = FunctionTable()
    max_tasks = config.max_tasks
    memory = _MemoryGauge(config.max_memory)
    encode = ResultEncoder(config.stdlib_results, config.result_error)
    done = 0
    spin_s = 0.0  # no spinning for the first task: it may be a long time coming
    while (max_tasks is None or done < max_tasks) and not memory.exceeded():
        # (the memory check runs between chunks: a chunk is never cut short)
        frame, fds = link.recv(spin_s)
        spin_s = SPIN_FOR_NEXT_TASK_S
        kind, chunk_id, func_id, mode, func_len = TASK_HEADER.unpack_from(frame)
        if kind == _STOP:
            return
        offset = TASK_HEADER.size
        if func_len:
            functions.put(func_id, load_function(frame[offset : offset + func_len]))
        fn = functions.get(func_id)
        mapped = MappedBuffers(fds)
        begin_task()  # a queue among the arguments is this task's to produce into
        try:
            items = loads(memoryview(frame)[offset + func_len :], mapped.buffers)
        except Exception as exc:
            end_task()
            _send(link, _DONE, chunk_id, 0.0, unpickle_failure(exc), mapped.released_mask())
            continue
        values, errors, compute_s = run_chunk(fn, CallMode(mode), items)
        end_task()
        del items
        done += len(values)
        payload, result_fds = encode(values, errors)
        del values, errors  # before the mask: a result may be an argument's array
        header = RESULT_HEADER.pack(_DONE, chunk_id, compute_s, mapped.released_mask())
        link.send(payload, result_fds, prefix=header)  # no copy of a large payload
    if memory.exceeded():
        # Tell the parent first: chunks it already sent us were never started.
        _send(link, MessageKind.RETIRING, 0, 0.0, None)


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


def _send(
    link: WorkerEnd, kind: int, chunk_id: int, compute_s: float, body: Any, released: int = 0
) -> None:
    link.send(RESULT_HEADER.pack(kind, chunk_id, compute_s, released) + dumps(body))
