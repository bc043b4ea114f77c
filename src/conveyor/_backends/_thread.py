"""Thread backend: the same engine, with worker threads instead of processes.

Nothing is pickled. Each worker thread takes chunks from its own inbox and reports to the
engine directly. A ``conveyor-timer`` thread starts only when a task has a timeout: a
thread cannot be killed, so on expiry the engine fails the task, abandons the thread
(it finishes in the background and its result is dropped) and starts a replacement.

Worker threads are named ``conveyor-worker_<n>`` by default: the ``<prefix>_<n>`` form of
``ThreadPoolExecutor``'s ``thread_name_prefix``, which the drop-in executor passes on.
"""

from __future__ import annotations

import queue
import threading
import time

from .._cpus import available_cpus
from .._deadline import Deadline
from .._engine._contract import Capabilities, EngineEvents, WorkerSetup
from .._engine._jobs import Chunk, Job
from .._engine._states import Slot
from .._run import CallMode, run_chunk
from .._state import install_shared, install_state
from ..errors import WorkerInitError

_STOP = None
MAX_TIMER_SLEEP_S = 1.0


class ThreadWorker:
    """One worker thread and its inbox."""

    def __init__(self, backend: ThreadBackend, slot: Slot) -> None:
        self.pid: int | None = None
        self.host: str | None = None
        self.backend = backend
        self.slot = slot
        self.inbox: queue.SimpleQueue[Chunk | None] = queue.SimpleQueue()
        self.abandoned = False
        self.thread = threading.Thread(
            target=self._run, name=f"{backend.setup.thread_name_prefix}_{slot.index}", daemon=True
        )
        self.thread.start()

    def send(self, chunk: Chunk) -> int:
        self.inbox.put(chunk)
        return 0

    def stop(self) -> None:
        self.inbox.put(_STOP)

    def kill(self) -> None:
        self.inbox.put(_STOP)  # a thread cannot be killed; it stops after its current task

    def abandon(self) -> None:
        """Let the thread finish its current task in the background; nobody waits for it."""
        self.abandoned = True
        self.inbox.put(_STOP)

    def _run(self) -> None:
        events = self.backend.events
        try:
            if not self._initialize(events):
                return
            events.on_ready(self.slot)
            self._serve(events)
        finally:
            events.on_worker_exit(self.slot, 0)

    def _initialize(self, events: EngineEvents) -> bool:
        setup = self.backend.setup
        install_state(setup.worker_state, per_thread=True)
        shared = setup.shared
        install_shared((lambda: shared) if shared is not None else None, per_thread=True)
        if setup.initializer is None:
            return True
        try:
            setup.initializer(*setup.initargs)
        except Exception as exc:
            events.on_cannot_start(self.slot, WorkerInitError.initializer_raised(exc))
            return False
        return True

    def _serve(self, events: EngineEvents) -> None:
        done = 0
        max_tasks = self.backend.setup.max_tasks
        while max_tasks is None or done < max_tasks:
            chunk = self.inbox.get()
            if chunk is _STOP:
                return
            values, errors, compute_s = run_chunk(
                chunk.job.fn, CallMode(chunk.job.mode), chunk.items
            )
            events.on_chunk_done(self.slot, chunk.id, values, errors, compute_s, 0)
            done += len(values)
            # Drop our references before blocking on the inbox again: the caller may be
            # waiting for its arguments and results to be freed.
            del chunk, values, errors


class ThreadBackend:
    """Starts worker threads for one engine."""

    name = "thread"
    capabilities = Capabilities(can_kill=False, pickles=False)

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self._events: EngineEvents | None = None
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._timer: threading.Thread | None = None
        self._timer_lock = threading.Lock()
        self._workers: list[ThreadWorker] = []

    @property
    def events(self) -> EngineEvents:
        assert self._events is not None, "bind() comes first"
        return self._events

    def default_size(self) -> int:
        return available_cpus()

    def bind(self, events: EngineEvents) -> None:
        self._events = events

    def start(self) -> None:
        pass  # worker threads report to the engine themselves: nothing to supervise

    def prepare(self, job: Job) -> None:
        pass  # threads call the caller's own function object

    def abort_start(self) -> None:
        for worker in self._workers:
            worker.kill()

    def spawn(self, slot: Slot) -> ThreadWorker:
        worker = ThreadWorker(self, slot)
        self._workers.append(worker)
        return worker

    def deadline_changed(self) -> None:
        """A task with a timeout was sent: start the deadline thread (once), wake it."""
        with self._timer_lock:
            if self._timer is None and not self._stopped.is_set():
                self._timer = threading.Thread(
                    target=self._run_timer, name="conveyor-timer", daemon=True
                )
                self._timer.start()
        self._wake.set()

    def stop_supervision(self) -> None:
        self._stopped.set()
        self._wake.set()

    def _run_timer(self) -> None:
        events = self.events
        while not self._stopped.is_set():
            deadline = events.tick(time.monotonic())
            sleep = MAX_TIMER_SLEEP_S
            if deadline is not None:
                sleep = min(sleep, max(0.0, deadline - time.monotonic()))
            self._wake.wait(sleep)
            self._wake.clear()

    def shutdown(self, timeout: float | None) -> bool:
        deadline = Deadline(timeout)
        current = threading.current_thread()
        waited = [w.thread for w in self._workers if w.thread is not current and not w.abandoned]
        with self._timer_lock:
            if self._timer is not None and self._timer is not current:
                waited.append(self._timer)
        self._stopped.set()
        self._wake.set()
        for thread in waited:
            thread.join(deadline.remaining())
        return not any(thread.is_alive() for thread in waited)


def create(setup: WorkerSetup) -> ThreadBackend:
    return ThreadBackend(setup)


__all__ = ["ThreadBackend", "create"]
