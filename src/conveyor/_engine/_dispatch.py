"""Dispatch: which job goes next, to which worker, in what size, and whether it may go now.

Jobs wait in arrival order; a job whose tasks crashed or were put back goes to the
front. A worker gets one chunk at a time, or more when its chunks are short enough that
the round trip would show (prefetch, see ``_capacity``). A job with an *admission*
(``Job.admission``: a limiter, or a downstream stage with no room) sends only what it
grants; one that grants nothing is looked past until its owner calls
``Engine.wake_dispatch``.

Everything here runs under the engine lock and may not block. Tasks that cannot be sent
(unpicklable arguments, a future cancelled while it waited, Ctrl-C while pickling) are
settled in the ledger at once.
"""

from __future__ import annotations

import itertools
import time
from collections import deque

from ..errors import EncodeError, TaskCancelledError, describe_call
from ._contract import Backend
from ._events import EventKind
from ._jobs import Chunk, Job
from ._ledger import Ledger
from ._outbox import Outbox, Thunks
from ._states import Slot, SlotState


class Dispatcher:
    """The queue of jobs with tasks to send, and the rules that pick where they go."""

    def __init__(self, slots: list[Slot], ledger: Ledger, backend: Backend, outbox: Outbox):
        self.jobs: deque[Job] = deque()  # jobs with tasks still to send, in arrival order
        self._slots = slots
        self._ledger = ledger
        self._backend = backend
        self._outbox = outbox
        self._chunk_ids = itertools.count(1)

    def add(self, job: Job) -> None:
        self.jobs.append(job)

    def put_first(self, job: Job) -> None:
        """The job has tasks to run again (after a crash): they go before new work."""
        if job not in self.jobs:
            self.jobs.appendleft(job)

    def clear(self) -> None:
        self.jobs.clear()

    def dispatch(self, out: Thunks) -> None:
        """Send chunks while some job has tasks it may send and some worker has room."""
        refused: set[int] = set()  # jobs whose admission said "not now", this pass
        while True:
            job = self._next_ready_job(refused)
            if job is None:
                return
            size = job.sizer.size(job.remaining_hint())
            slot = self._free_slot(job, size)
            if slot is None:
                return
            if slot.budget is not None:
                size = min(size, slot.budget)
            if job.admission is not None:
                size = job.admission.take(job, size)
                if size <= 0:
                    refused.add(job.id)
                    continue
            self._send(slot, job, size, out)

    def _next_ready_job(self, refused: set[int]) -> Job | None:
        jobs = self.jobs
        for _ in range(len(jobs)):
            job = jobs[0]
            if job.has_ready_items() and not job.cancelled and job.id not in refused:
                return job
            if (job.input_done and not job.has_ready_items()) or job.cancelled:
                jobs.popleft()  # fully sent; it stays in the ledger until its results are in
            else:
                jobs.rotate(-1)  # waiting for its feeder or its admission: look past it
        return None

    def _free_slot(self, job: Job, size: int) -> Slot | None:
        capacity = self._capacity(job, size)
        early = self._backend.capabilities.sends_before_ready
        best: Slot | None = None
        for slot in self._slots:
            if (
                slot.takes_work
                and (early or slot.state is SlotState.READY)
                and len(slot.inflight) < capacity
                and (best is None or len(slot.inflight) < len(best.inflight))
            ):
                best = slot
                if not slot.inflight:
                    break
        return best

    @staticmethod
    def _capacity(job: Job, size: int) -> int:
        """How many chunks of this job's size a worker may hold, the running one included.

        Short chunks are prefetched: enough of them to keep the worker busy for
        ``hold_s`` while the parent answers the others (at least one, at most
        ``max_held_chunks`` and ``max_held_bytes``), so a worker never waits for the
        parent between tiny tasks, as when many threads submit at once. The numbers are
        the backend's ``Pacing`` (``_chunking.py``).
        """
        sizer = job.sizer
        if job.options.timeout is not None or sizer.item_s is None:
            return 1  # a known start time per task, or no estimate yet: no prefetch
        pacing = sizer.pacing
        chunk_s = sizer.chunk_seconds(size)
        if chunk_s >= pacing.prefetch_below_s:
            return 1
        held = min(pacing.max_held_chunks - 1, int(pacing.hold_s / max(chunk_s, 1e-9)))
        if sizer.item_bytes:  # large arguments: what is held must fit a socket's buffer
            held = min(held, int(pacing.max_held_bytes / max(sizer.item_bytes * size, 1.0)))
        return 1 + max(1, held)

    def _send(self, slot: Slot, job: Job, size: int, out: Thunks) -> None:
        chunk = job.next_chunk(next(self._chunk_ids), size)
        if job.admission is not None:
            job.admission.bound(job, chunk.indices, size)
        if not job.sink.claim():
            self._ledger.withdrawn(job, chunk.indices, out)  # a future cancelled as it waited
            self._ledger.finish_if_complete(job, out)
            return
        assert slot.handle is not None
        while chunk.items:
            try:
                chunk.nbytes = slot.handle.send(chunk)
                break
            except EncodeError as exc:
                self._drop_unsendable(chunk, exc.failures, out)
            except BaseException as exc:  # Ctrl-C (or SystemExit) while pickling arguments
                self._drop_interrupted(chunk, exc, out)
                if not self._outbox.on_deferring_thread:
                    raise  # the caller's own submit or map: the interrupt is theirs
                return
        if chunk.items:
            self._record_sent(slot, chunk, out)

    def _record_sent(self, slot: Slot, chunk: Chunk, out: Thunks) -> None:
        job = chunk.job
        now = time.monotonic()
        chunk.sent_at = now
        if len(chunk) > 1:
            # Slack for the chunk's other tasks. A chunk that overruns it is split and its
            # tasks re-run alone, uncharged, each then held to the exact timeout.
            chunk.expected_s = 2 * job.sizer.chunk_seconds(len(chunk))
        if not slot.inflight:
            chunk.started_at = now
            if self._ledger.events.active:
                self._ledger.events.tasks(
                    out, EventKind.STARTED, job, chunk.indices, chunk=chunk, slot=slot
                )
        slot.inflight.append(chunk)
        if slot.budget is not None:
            slot.budget -= len(chunk)
        counters = self._ledger.counters
        counters.chunks_sent += 1
        counters.bytes_sent += chunk.nbytes
        counters.last_chunk_size = len(chunk)
        if job.options.timeout is not None:
            self._backend.deadline_changed()  # the supervisor must learn the new deadline

    def _drop_interrupted(self, chunk: Chunk, exc: BaseException, out: Thunks) -> None:
        """Settle a chunk whose pickling was interrupted: its tasks never ran."""
        job = chunk.job
        for index in chunk.indices:
            error = TaskCancelledError(
                f"{describe_call(job.fn, index)} was not run: {type(exc).__name__} was "
                "raised while its arguments were being pickled"
            )
            error.__cause__ = exc
            self._ledger.cancelled(job, index, error, out, chunk=chunk)
        chunk.items, chunk.indices = [], []
        self._ledger.finish_if_complete(job, out)

    def _drop_unsendable(
        self, chunk: Chunk, failures: dict[int, BaseException], out: Thunks
    ) -> None:
        """Fail the items that cannot be pickled; keep the rest of the chunk."""
        job = chunk.job
        if -1 in failures:
            failures = {pos: failures[-1] for pos in range(len(chunk.items))}
        keep = [pos for pos in range(len(chunk.items)) if pos not in failures]
        for pos, exc in failures.items():
            self._ledger.failed(job, chunk.indices[pos], exc, out, chunk=chunk)
        chunk.indices = [chunk.indices[pos] for pos in keep]
        chunk.items = [chunk.items[pos] for pos in keep]
        self._ledger.finish_if_complete(job, out)


__all__ = ["Dispatcher"]
