"""Thread backend: the same engine, with worker threads instead of processes.

Nothing is pickled. Each worker thread takes chunks from its own inbox and reports to the
engine directly. A ``conveyor-timer`` thread starts only when a task has a timeout: a
thread cannot be killed, so on expiry the engine fails the task, abandons the thread
(it finishes in the background and its result is dropped) and starts a replacement.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from ._engine import Engine, EngineState, Slot
from ._execute import CallMode, install_state, run_chunk
from ._scheduler import Chunk

_STOP = None
MAX_TIMER_SLEEP_S = 1.0


class ThreadWorker:
    """One worker thread and its inbox."""

    def __init__(self, backend: ThreadBackend, slot: Slot) -> None:
        self.pid: int | None = None
        self.backend = backend
        self.slot = slot
        self.inbox: queue.SimpleQueue[Chunk | None] = queue.SimpleQueue()
        self.abandoned = False
        self.thread = threading.Thread(
            target=self._run, name=f"{backend.name_prefix}_{slot.index}", daemon=True
        )
        self.thread.start()

    def send(self, chunk: Chunk, send_function: bool) -> int:
        self.inbox.put(chunk)
        return 0

    def stop(self) -> None:
        self.inbox.put(_STOP)

    def kill(self) -> None:
        self.inbox.put(_STOP)  # a thread cannot be killed; it stops after its current task

    def discard(self) -> None:
        self.inbox.put(_STOP)

    def abandon(self) -> None:
        """Let the thread finish its current task in the background; nobody waits for it."""
        self.abandoned = True
        self.inbox.put(_STOP)

    def _run(self) -> None:
        engine = self.backend.engine
        assert engine is not None
        try:
            if not self._initialize(engine):
                return
            engine.on_ready(self.slot)
            self._serve(engine)
        finally:
            engine.on_worker_exit(self.slot, 0)

    def _initialize(self, engine: Engine) -> bool:
        install_state(self.backend.worker_state, per_thread=True)
        if self.backend.initializer is None:
            return True
        try:
            self.backend.initializer(*self.backend.initargs)
        except Exception as exc:
            engine.on_init_failed(self.slot, exc)
            return False
        return True

    def _serve(self, engine: Engine) -> None:
        done = 0
        max_tasks = self.backend.max_tasks
        while max_tasks is None or done < max_tasks:
            chunk = self.inbox.get()
            if chunk is _STOP:
                return
            values, errors, compute_s = run_chunk(
                chunk.job.fn, CallMode(chunk.job.mode), chunk.items
            )
            engine.on_chunk_done(self.slot, chunk.id, values, errors, compute_s, 0)
            done += len(values)
            # Drop our references before blocking on the inbox again: the caller may be
            # waiting for its arguments and results to be freed.
            del chunk, values, errors


class ThreadBackend:
    """Starts worker threads for one engine."""

    name = "thread"
    pickles = False
    can_kill = False

    def __init__(
        self,
        *,
        initializer: Any = None,
        initargs: tuple[Any, ...] = (),
        worker_state: Any = None,
        max_tasks: int | None = None,
        name_prefix: str = "conveyor-worker",
    ) -> None:
        self.name_prefix = name_prefix
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self.worker_state = worker_state
        self.max_tasks = max_tasks
        self.engine: Engine | None = None
        self._wake = threading.Event()
        self._timer: threading.Thread | None = None
        self._timer_lock = threading.Lock()
        self._workers: list[ThreadWorker] = []

    def start(self, engine: Engine) -> None:
        self.engine = engine

    def dump_function(self, fn: Any) -> None:
        return None  # threads call the caller's own function object

    def abort_start(self) -> None:
        for worker in self._workers:
            worker.discard()

    def spawn(self, slot: Slot) -> ThreadWorker:
        worker = ThreadWorker(self, slot)
        self._workers.append(worker)
        return worker

    def wakeup(self) -> None:
        self._wake.set()
        self.ensure_timer()

    def ensure_timer(self) -> None:
        """Start the deadline thread (once), for tasks with a timeout."""
        with self._timer_lock:
            if self._timer is None:
                self._timer = threading.Thread(
                    target=self._run_timer, name="conveyor-timer", daemon=True
                )
                self._timer.start()

    def _run_timer(self) -> None:
        engine = self.engine
        assert engine is not None
        while engine.state in (EngineState.RUNNING, EngineState.CLOSING):
            deadline = engine.tick(time.monotonic())
            sleep = MAX_TIMER_SLEEP_S
            if deadline is not None:
                sleep = min(sleep, max(0.0, deadline - time.monotonic()))
            self._wake.wait(sleep)
            self._wake.clear()

    def shutdown(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        current = threading.current_thread()
        for worker in list(self._workers):
            if worker.thread is current or worker.abandoned:
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            worker.thread.join(remaining)
        self._wake.set()
        return all(
            not w.thread.is_alive()
            for w in self._workers
            if w.thread is not current and not w.abandoned
        )


__all__ = ["ThreadBackend"]
