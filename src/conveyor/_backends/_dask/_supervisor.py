"""The ``conveyor-dask`` thread: answers in order, the cluster's workers, deadlines.

Dask calls back on a thread of its own when a chunk's task finishes; the callback only
queues a message. This thread fetches the answers (many in one round trip), hands them
to the engine in the order each slot's chunks were sent, and every ``WATCH_S`` while
work is out asks the scheduler which workers it has: a worker that left ends the slots
on it (like a dead process: what they held is settled by the engine's recovery), a
worker that joined takes the slots that wait. It also enforces per-task timeouts
(``EngineEvents.tick``). Losing the scheduler fails everything at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from ..._engine._contract import EngineEvents
from ..._engine._jobs import Chunk
from ..._engine._states import Slot
from ..._transport._results import decode_results, name_tasks_of_unpicklable_results
from ..._transport._serialize import unpack_exception
from ...errors import ClusterLostError, WorkerInitError
from ._cluster import RPC_TIMEOUT_S, Cluster, WorkerInfo, gather_within
from ._handle import DaskWorker, Sent
from ._remote import Answer

logger = logging.getLogger("conveyor.dask")

# How often the cluster's workers are checked while work is out (and when idle).
WATCH_S = 0.25
IDLE_WATCH_S = 2.0
# With no Dask worker at all for this long, while work waits, the pool breaks.
NO_WORKER_TIMEOUT_S = 60.0
_STOP = ("stop",)


class Supervisor:
    def __init__(
        self, cluster: Cluster, known: dict[str, WorkerInfo], traceback_type: type[Exception]
    ) -> None:
        self._cluster = cluster
        self._client = cluster.client
        self._traceback_type = traceback_type
        self._events: EngineEvents | None = None
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lock = threading.Lock()  # the handles and the worker tables
        self._handles: list[DaskWorker] = []
        self._known = known
        self._doomed: set[str] = set()  # being restarted: no new slot goes there
        self._pids: dict[str, int] = {}  # worker address -> pid, from its first answer
        self._stopping = threading.Event()
        self._closed = False
        self._broken = False
        self._waiting_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="conveyor-dask", daemon=True)

    @property
    def events(self) -> EngineEvents:
        assert self._events is not None, "bind() comes first"
        return self._events

    def bind(self, events: EngineEvents) -> None:
        self._events = events

    # --- from any thread ------------------------------------------------------------------

    def add(self, handle: DaskWorker) -> None:
        """A new slot: give it a worker thread now if one is free, else when one is.

        Slots never share a thread: a task queued behind another slot's would have its
        timeout counted while it waited. A slot without a thread takes no work
        (``sends_before_ready``), so a pool asked for more slots than the cluster has
        threads runs as wide as the cluster, and grows when workers join.
        """
        with self._lock:
            self._handles.append(handle)
            address = self._free_address()
        if address is not None:
            handle.assign(address, self._pids.get(address))
            self._inbox.put(("ready", handle))

    def doom(self, address: str) -> None:
        """``address`` is being restarted: no new slot goes there."""
        with self._lock:
            self._known.pop(address, None)
            self._doomed.add(address)

    def post_done(self, handle: DaskWorker, key: str) -> None:
        self._inbox.put(("done", handle, key))

    def post_exit(self, handle: DaskWorker, exitcode: int | None) -> None:
        self._inbox.put(("exit", handle, exitcode))

    def wake(self) -> None:
        self._inbox.put(("wake",))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._inbox.put(_STOP)

    def join(self, timeout: float | None) -> bool:
        self.stop()
        if self._thread is not threading.current_thread() and self._thread.ident is not None:
            self._thread.join(timeout)
        self._closed = True  # if it is still running, it ends at its next wake-up
        return not self._thread.is_alive()

    @property
    def total_threads(self) -> int:
        return max(1, sum(w.nthreads for w in self._known.values()))

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._supervise()
        except BaseException as exc:
            logger.exception("the conveyor-dask thread failed")
            self.events.on_internal_error(exc)

    def _supervise(self) -> None:
        next_watch = time.monotonic()
        next_deadline: float | None = None
        while True:
            now = time.monotonic()
            wait = max(0.0, next_watch - now)
            if next_deadline is not None:
                wait = min(wait, max(0.0, next_deadline - now))
            messages = self._take(wait)
            done = [m for m in messages if m[0] == "done"]
            if done:
                self._read_answers(done)
            for message in messages:
                self._handle_message(message)
            if (self._stopping.is_set() and self._all_exited()) or self._closed:
                return
            if time.monotonic() >= next_watch:
                busy = self._watch_cluster()
                next_watch = time.monotonic() + (WATCH_S if busy else IDLE_WATCH_S)
            next_deadline = self.events.tick(time.monotonic())

    def _take(self, wait: float) -> list[tuple[Any, ...]]:
        try:
            messages = [self._inbox.get(timeout=wait)]
        except queue.Empty:
            return []
        while True:
            try:
                messages.append(self._inbox.get_nowait())
            except queue.Empty:
                return messages

    def _handle_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            handle = message[1]
            if not handle.exited:
                self.events.on_ready(handle.slot)
        elif kind == "exit":
            self._end_slot(message[1], message[2])
        elif kind == "done":
            self._deliver(message[1])

    # --- answers --------------------------------------------------------------------------

    def _read_answers(self, done: list[tuple[Any, ...]]) -> None:
        """Fetch the answers of finished chunks, many in one round trip."""
        finished: list[Sent] = []
        for _, handle, key in done:
            with handle.lock:
                sent = handle.sent.get(key)
            if sent is None or sent.answer is not None:
                continue  # withdrawn (its worker is gone), or read already
            status = sent.future.status
            if status == "finished":
                finished.append(sent)
            elif status == "error":
                sent.answer = ("error", self._task_error(handle, sent))
            elif status == "cancelled":  # not by us: the client lost its scheduler
                self._break(f"lost the connection to the Dask scheduler at {self._where()}")
            # "lost": the worker died holding the answer; watching the cluster ends the slot
        if not finished:
            return
        try:
            answers = gather_within(self._client, [sent.future for sent in finished])
        except Exception:  # a worker died holding one: each on its own, with a timeout
            answers = [self._one_answer(sent) for sent in finished]
        for sent, answer in zip(finished, answers, strict=True):
            sent.answer = answer

    def _one_answer(self, sent: Sent) -> tuple[Any, ...] | None:
        try:
            return tuple(sent.future.result(timeout=RPC_TIMEOUT_S))
        except Exception as exc:
            if sent.future.status in ("lost", "pending"):
                return None  # its worker is gone: watching the cluster ends the slot
            return ("error", exc)

    def _task_error(self, handle: DaskWorker, sent: Sent) -> BaseException:
        """A chunk's Dask task itself failed (the user's errors are caught inside it)."""
        try:
            exc = sent.future.exception(timeout=RPC_TIMEOUT_S)
        except Exception as failure:
            exc = failure
        if isinstance(exc, ModuleNotFoundError) and "conveyor" in str(exc):
            missing = ImportError(
                f"the Dask worker {handle.host} cannot import conveyor: install conveyor, "
                "the same version as here, on every worker"
            )
            missing.__cause__ = exc
            return missing
        return exc if exc is not None else RuntimeError("the Dask task failed without an error")

    def _deliver(self, handle: DaskWorker) -> None:
        for sent in handle.deliverable():
            self._hand_over(handle, sent)
        if handle.idle_and_stopping():
            self._end_slot(handle, 0)

    def _hand_over(self, handle: DaskWorker, sent: Sent) -> None:
        events, slot = self.events, handle.slot
        answer = sent.answer
        assert answer is not None
        if answer[0] == "error":
            events.on_chunk_done(slot, sent.chunk_id, [], {-1: answer[1]}, 0.0, 0)
            return
        kind, payload, compute_s, pid = answer
        handle.pid = pid
        if handle.host is not None:
            self._pids[handle.host] = pid
        if kind == Answer.INIT_FAILED:
            exc = unpack_exception(payload, self._traceback_type)
            events.on_cannot_start(slot, WorkerInitError.initializer_raised(exc))
            return
        values, errors = decode_results(payload, self._traceback_type)
        if errors:
            chunk = _inflight(slot, sent.chunk_id)
            if chunk is not None:
                name_tasks_of_unpicklable_results(errors, chunk.job.fn, chunk.indices)
        events.on_chunk_done(slot, sent.chunk_id, values, errors, compute_s, len(payload))

    # --- slots and workers ----------------------------------------------------------------

    def _end_slot(self, handle: DaskWorker, exitcode: int | None) -> None:
        if handle.exited:
            return
        futures = handle.take_futures()
        if futures:
            try:
                self._client.cancel(futures, force=True)
            except Exception as exc:  # the client is closing: nothing to cancel any more
                logger.debug("cancelling Dask futures failed: %r", exc)
        with self._lock:
            if handle in self._handles:
                self._handles.remove(handle)
        self.events.on_worker_exit(handle.slot, exitcode)

    def _all_exited(self) -> bool:
        with self._lock:
            return not self._handles

    def _watch_cluster(self) -> bool:
        """Compare the cluster's workers with the slots; True if any slot has work out."""
        try:
            current = self._cluster.workers()
        except Exception as exc:
            self._break(f"the Dask scheduler at {self._where()} stopped answering ({exc!r})")
            return False
        with self._lock:
            handles = list(self._handles)
            self._doomed &= set(current)  # a restarted worker comes back at a new address
            self._known = {a: w for a, w in current.items() if a not in self._doomed}
            self._pids = {a: pid for a, pid in self._pids.items() if a in current}
        for handle in handles:
            if handle.host is not None and handle.host not in current and not handle.exited:
                logger.warning("Dask worker %s left the cluster", handle.host)
                self._end_slot(handle, None)
        self._assign_waiting(handles)
        return any(h.sent for h in handles)

    def _assign_waiting(self, handles: list[DaskWorker]) -> None:
        waiting = [h for h in handles if h.host is None and not h.exited]
        if not waiting:
            self._waiting_since = None
            return
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        # A waiting slot takes no work (``sends_before_ready``), so it may wait as long as
        # it takes: the pool runs on fewer slots meanwhile, never on a shared thread.
        for handle in waiting:
            with self._lock:
                address = self._free_address()
            if address is None:
                break
            handle.assign(address, self._pids.get(address))
            self.events.on_ready(handle.slot)
        if all(h.host is not None for h in waiting):
            self._waiting_since = None
        elif not self._known and now - self._waiting_since > NO_WORKER_TIMEOUT_S:
            self._break(f"the Dask scheduler at {self._where()} has had no worker for 60 s")

    def _slots_per_worker(self) -> dict[str, int]:
        used: dict[str, int] = {}
        for handle in self._handles:
            if handle.host is not None and not handle.exited:
                used[handle.host] = used.get(handle.host, 0) + 1
        return used

    def _free_address(self) -> str | None:
        """The worker with the most threads not yet given to a slot, or None if every
        thread has one (call with the lock)."""
        known = self._known
        if not known:
            return None
        used = self._slots_per_worker()
        best = max(known, key=lambda a: known[a].nthreads - used.get(a, 0))
        return best if known[best].nthreads > used.get(best, 0) else None

    def _break(self, what: str) -> None:
        """The cluster is lost: fail everything, once."""
        if self._broken or self._stopping.is_set():
            return
        self._broken = True
        error = ClusterLostError(f"{what}; every task not finished has failed")
        with self._lock:
            slot = self._handles[0].slot if self._handles else None
        if slot is not None:
            self.events.on_cannot_start(slot, error)

    def _where(self) -> str:
        try:
            return self._cluster.address
        except Exception:
            return "(unknown address)"


def _inflight(slot: Slot, chunk_id: int) -> Chunk | None:
    for chunk in slot.inflight:
        if chunk.id == chunk_id:
            return chunk
    return None


__all__ = ["NO_WORKER_TIMEOUT_S", "WATCH_S", "Supervisor"]
