"""The backend contract: what the engine asks of a backend, and what a backend tells it.

A *backend* starts workers and moves chunks to them and results back; the *engine*
decides which chunk goes where and what every outcome costs. They meet here, and only
here: a backend module imports this contract, the job records (``_jobs.py``) and the
slot states (``_states.py``), never the engine itself. The process, thread and (next)
Dask backends each implement ``Backend`` and ``WorkerHandle``, and call back through
``EngineEvents``.

The life of a backend, driven by the engine::

    bind(events)          # before anything else: where to report
    spawn(slot) x N       # one handle per worker; more later, to replace dead ones
    start()               # begin supervising (reading results, reaping workers)
    prepare(job)          # once per job, at submit: e.g. pickle its function
    handle.send(chunk)    # ... many times; handle.stop() / .kill() / .abandon()
    stop_supervision()    # no more work will come: exit once every worker is gone
    shutdown(timeout)     # wait for the backend's own threads

Threads: ``send``, ``stop``, ``kill`` and ``prepare`` are called with the engine's lock
held, so they must not block for long and must never call back into the engine. The
up-calls of ``EngineEvents`` take the lock themselves: call them with no lock of the
backend's held that a ``send`` might also need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, Protocol

from ..errors import RemoteTraceback
from ._chunking import LOCAL_PACING, Pacing
from ._jobs import Chunk, Job
from ._states import Slot


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the engine and the faces ask, never assume.

    ``can_kill``: a running task can be stopped (by stopping its worker), so timeouts
    and cancelling a running task free the worker. ``pickles``: tasks cross a process
    boundary, so functions, arguments and results must pickle. ``remote``: workers may
    run on other machines (a result's host is worth reporting). ``pacing``: the chunk
    sizes and prefetch that suit the backend's cost per chunk. ``no_timeouts``: None if
    per-task timeouts are enforced, else why not (a pool given one is refused with it).
    ``sends_before_ready``: a starting worker may be sent work that waits for it (a
    process's socket holds it); if not (a Dask slot still waiting for a cluster worker),
    a worker gets work only once it is ready.
    """

    can_kill: bool
    pickles: bool
    remote: bool = False
    pacing: Pacing = LOCAL_PACING
    no_timeouts: str | None = None
    sends_before_ready: bool = True


@dataclass(frozen=True)
class WorkerSetup:
    """How a backend sets up its workers: the pool's options and the face's conventions.

    Each backend reads what applies to it and ignores the rest (a thread has no start
    method); an option it cannot honour is an error when the backend is created.
    """

    workers: int | None = None  # how many the caller asked for (None: the backend's default)
    initializer: Callable[..., Any] | None = None
    initargs: tuple[Any, ...] = ()
    worker_state: Callable[[], Any] | None = None
    shared: Any = None  # the object every worker reads through conveyor.shared()
    max_tasks: int | None = None  # tasks per worker, then it is replaced
    max_memory: int | None = None  # process: resident bytes, then it is replaced
    context: BaseContext | str | None = None  # process: the start method
    thread_name_prefix: str = "conveyor-worker"  # thread: names of the worker threads
    # dask: a ``distributed.Client``, a scheduler address, or None (a LocalCluster of the
    # pool's own)
    client: Any = None
    # The face's conventions, where the stdlib's APIs differ (``_frontend/_policy.py``):
    stdlib_start_method: bool = False  # the stdlib's default start method, not forkserver
    stdlib_results: bool = False  # results pickle with the stdlib pickler only
    result_error: type[Exception] | None = None  # what an unpicklable result becomes
    remote_traceback_type: type[Exception] = RemoteTraceback


class WorkerHandle(Protocol):
    """The backend's handle on one worker; the engine keeps it in the worker's slot."""

    pid: int | None
    host: str | None  # None: this machine

    def send(self, chunk: Chunk) -> int:
        """Queue ``chunk`` to run after what the worker holds; return the bytes sent.

        Raises ``EncodeError`` for items that cannot be sent (the rest are not sent).
        """

    def stop(self) -> None:
        """Let the worker exit after what it holds."""

    def kill(self) -> None:
        """Stop the worker now (for a thread: after its current task)."""

    def abandon(self) -> None:
        """Nobody waits for this worker any more (a thread that overran its timeout)."""


class EngineEvents(Protocol):
    """The up-calls a backend makes into the engine, from any of its threads."""

    def on_ready(self, slot: Slot) -> None:
        """The worker finished starting (its initializer returned)."""

    def on_retiring(self, slot: Slot) -> None:
        """The worker will exit on its own after this message: give it no more work."""

    def on_chunk_done(
        self,
        slot: Slot,
        chunk_id: int,
        values: list[Any],
        errors: dict[int, BaseException],
        compute_s: float,
        nbytes: int,
    ) -> None:
        """The worker ran a chunk: ``values`` by position, ``errors`` where calls raised.

        Position -1 in ``errors`` fails the whole chunk (its results could not be read).
        """

    def on_cannot_start(self, slot: Slot, error: BaseException) -> None:
        """Workers cannot start (a failing initializer): the pool breaks with ``error``."""

    def on_worker_exit(self, slot: Slot, exitcode: int | None) -> None:
        """The worker is gone. ``exitcode``: 0 clean, > 0 its code, < 0 a signal, None
        unknown."""

    def on_internal_error(self, exc: BaseException) -> None:
        """The backend's supervision failed (a bug): fail everything loudly, stop."""

    def tick(self, now: float) -> float | None:
        """Enforce per-task timeouts; return the next deadline (monotonic), if any."""

    def defer_deliveries(self) -> None:
        """Hold back deliveries caused on this thread until ``run_deferred``."""

    def run_deferred(self) -> None:
        """Run the deliveries held back on this thread."""


class Backend(Protocol):
    """Starts workers and moves chunks for one engine. See the module docstring."""

    name: str
    capabilities: Capabilities

    def bind(self, events: EngineEvents) -> None: ...

    def default_size(self) -> int:
        """How many workers the pool runs when the caller does not say."""

    def spawn(self, slot: Slot) -> WorkerHandle: ...

    def start(self) -> None: ...

    def abort_start(self) -> None:
        """Undo a start that failed part-way: stop the workers already spawned."""

    def prepare(self, job: Job) -> None:
        """Make a job ready to send (pickle its function); raising fails the job."""

    def deadline_changed(self) -> None:
        """A chunk with a timeout was sent: the next deadline may be sooner."""

    def stop_supervision(self) -> None:
        """No more work will be sent: end supervision once every worker has exited."""

    def shutdown(self, timeout: float | None) -> bool:
        """Wait for the backend's threads to end; True if they did in time."""


BackendFactory = Callable[[WorkerSetup], Backend]

__all__ = [
    "Backend",
    "BackendFactory",
    "Capabilities",
    "EngineEvents",
    "Pacing",
    "WorkerHandle",
    "WorkerSetup",
]
