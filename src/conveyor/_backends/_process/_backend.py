"""Process backend: the start method, the worker configuration, and function shipping.

Threads and pipes, and who owns them:

- ``conveyor-supervisor`` (one per pool, ``_supervisor.py``) owns the selector: it reads
  every worker's socket, watches every worker's process sentinel, flushes writes the
  sockets could not take at once, and enforces deadlines.
- Caller threads write chunks straight into a worker's socket (under the engine lock, see
  ``_handle.py``), so a ``submit`` costs no thread hand-off on the way in.
- A wake-up pipe lets other threads interrupt the supervisor's ``select``.

Why forkserver by default: the parent has threads (the supervisor, callers), and forking a
process with threads can copy a lock held by another thread into the child, deadlocking it.
The fork server is a single-threaded process forked once; workers fork from it. It also
preloads conveyor's worker module (``_child.py``) so each worker starts in a few milliseconds.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from multiprocessing.context import BaseContext

from ..._compat import forkserver_preload, starting_as_worker
from ..._cpus import available_cpus
from ..._engine._contract import Capabilities, EngineEvents, WorkerSetup
from ..._engine._jobs import Job
from ..._engine._states import Slot
from ..._transport._broadcast import Broadcast
from ..._transport._mainscript import MainView, main_kind
from ..._transport._protocol import WorkerConfig, WorkerExit
from ..._transport._serialize import Serializer, add_note
from ..._transport._shm import SegmentCache
from ._handle import ProcessWorker
from ._shipping import FunctionRegistry
from ._supervisor import Supervisor

# The module a forkserver preloads, so that workers start with it imported.
CHILD_MODULE = "conveyor._backends._process._child"


def default_context(stdlib: bool = False) -> BaseContext:
    """The start method a pool uses when given no ``context``.

    The drop-in classes use what the stdlib's would: the start method the program set
    with ``multiprocessing.set_start_method``, else the platform's default (fork on Linux
    up to 3.13, forkserver from 3.14: gh-84559), so that code written for them, such as
    locks made in the default context and passed in ``initargs``, runs unchanged.

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
    if stdlib:
        return multiprocessing.get_context(chosen or platform_default)
    if chosen is not None and chosen != platform_default:
        return multiprocessing.get_context(chosen)
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def resolve_context(context: BaseContext | str | None, stdlib: bool = False) -> BaseContext:
    if context is None:
        ctx = default_context(stdlib)
    elif isinstance(context, str):
        ctx = multiprocessing.get_context(context)
    else:
        ctx = context
    if ctx.get_start_method() == "forkserver":
        # Workers then start with conveyor already imported. '__main__' stays in the list,
        # as in the stdlib, so classes defined in the main script unpickle by reference.
        forkserver_preload(ctx, CHILD_MODULE)
    return ctx


class ProcessBackend:
    """Starts worker processes for one engine; its supervisor thread watches them."""

    name = "process"
    capabilities = Capabilities(can_kill=True, pickles=True)

    def __init__(self, setup: WorkerSetup) -> None:
        if starting_as_worker():
            # Each worker of a main module without the guard would start a pool of its
            # own and print a long traceback; it exits quietly, and the parent says why.
            os._exit(WorkerExit.MAIN_WITHOUT_GUARD)
        self.ctx = resolve_context(setup.context, setup.stdlib_start_method)
        method = self.ctx.get_start_method()
        # The worker process's entry point, found by name: the parent shares the wire
        # protocol with it (_transport/_protocol.py), not its code. Referring to it
        # directly keeps a worker from importing anything beyond the child's module
        # (which the fork server preloads, and which a forked worker inherits).
        self.entry_point = importlib.import_module(CHILD_MODULE).main
        self.main_kind = main_kind(method)
        self.serializer = Serializer(MainView(self.main_kind))
        self.initargs = tuple(setup.initargs)
        # Pickled once for every worker; its buffers in memfds they all map.
        self.broadcast = Broadcast.of(setup.shared) if setup.shared is not None else None
        self.traceback_type = setup.remote_traceback_type
        config = WorkerConfig(
            initializer=setup.initializer,
            worker_state=setup.worker_state,
            max_tasks=setup.max_tasks,
            max_memory=setup.max_memory,
            pool_pid=os.getpid(),
            start_method=method,
            stdlib_results=setup.stdlib_results,
            result_error=setup.result_error,
        )
        try:
            self.config_bytes = self.serializer.dumps_by_value(config)
        except Exception as exc:
            add_note(exc, "conveyor: cannot pickle the pool's initializer or worker_state")
            raise
        self.functions = FunctionRegistry()
        self.segments = SegmentCache()
        self._supervisor: Supervisor | None = None

    @property
    def supervisor(self) -> Supervisor:
        assert self._supervisor is not None, "bind() comes first"
        return self._supervisor

    # --- Backend --------------------------------------------------------------------------

    def default_size(self) -> int:
        return available_cpus()

    def bind(self, events: EngineEvents) -> None:
        self._supervisor = Supervisor(events, self.traceback_type, self.segments)

    def spawn(self, slot: Slot) -> ProcessWorker:
        worker = ProcessWorker(self, slot)
        self.supervisor.add(worker)
        return worker

    def start(self) -> None:
        self.supervisor.start()

    def abort_start(self) -> None:
        """Undo a start that failed part-way: stop the workers already started."""
        for worker in self.supervisor.take_unstarted():
            worker.discard()
        self.supervisor.close()
        self._close_broadcast()

    def prepare(self, job: Job) -> None:
        """Pickle the job's function, once per function (it fails the job if it cannot)."""
        job.shipped = self.functions.register(job.fn, self.serializer.dumps_function)

    def deadline_changed(self) -> None:
        self.supervisor.wakeup()

    def stop_supervision(self) -> None:
        self.supervisor.stop()

    def shutdown(self, timeout: float | None) -> bool:
        joined = self.supervisor.join(timeout)
        self._close_broadcast()  # no worker starts any more: none needs it
        return joined

    def _close_broadcast(self) -> None:
        if self.broadcast is not None:
            self.broadcast.close()

    # --- for the worker handles -----------------------------------------------------------

    def watch_writes(self, worker: ProcessWorker) -> None:
        self.supervisor.watch_writes(worker)


def create(setup: WorkerSetup) -> ProcessBackend:
    return ProcessBackend(setup)


__all__ = ["CHILD_MODULE", "ProcessBackend", "create", "default_context", "resolve_context"]
