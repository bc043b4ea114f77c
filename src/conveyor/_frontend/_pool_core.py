"""What every public pool shares: building the engine, turning calls into jobs, shutdown.

The drop-in ``Pool``/``ThreadPool``, the executors and the modern ``WorkerPool`` are thin
faces over ``PoolCore``; they differ only in their signatures, result types and error
messages.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.context import BaseContext
from typing import Any, Literal, NamedTuple

from .. import _backends
from .._deadline import Deadline
from .._engine._engine import Engine
from .._engine._events import Subscriber
from .._engine._jobs import CallMode, ChunkSizer, Job, Sink, TaskOptions
from .._queues._queue import producer_ends_for
from .._shared._limiters import CapacityLimiter, RateLimiter
from .._stats import PoolStats
from .._transport._fds import close_fds
from . import _lifetime
from ._feeder import Feeder
from ._iterate import ResultBuffer, ResultIterator
from ._limits import LimiterAdmission, ReleasingSink
from ._policy import CompatPolicy
from ._progress import ProgressArg, follow
from ._sinks import SinkWrapper
from ._subscription import Subscription

BackendName = Literal["process", "thread", "dask"]


# How long terminate() waits for the workers, then for each lazy input's thread.
TERMINATE_JOIN_S = 10.0
FEEDER_JOIN_S = 1.0


class Submitted(NamedTuple):
    """A submitted job, and the function that closes its progress display (if any)."""

    job: Job
    stop_progress: Callable[[], None] | None


class PoolCore:
    """The engine plus the bookkeeping the public faces share."""

    def __init__(
        self,
        backend: str,
        workers: int | None,
        *,
        context: BaseContext | str | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Sequence[Any] = (),
        max_tasks_per_worker: int | None = None,
        worker_state: Callable[[], Any] | None = None,
        shared: Any = None,
        options: TaskOptions | None = None,
        finish_at_exit: bool = False,
        max_worker_memory: int | None = None,
        thread_name_prefix: str = "conveyor-worker",
        client: Any = None,
        limiter: CapacityLimiter | RateLimiter | None = None,
        policy: CompatPolicy,
    ) -> None:
        if max_worker_memory is not None and (
            not isinstance(max_worker_memory, int) or max_worker_memory <= 0
        ):
            raise ValueError(
                f"max_worker_memory must be a positive number of bytes, not {max_worker_memory!r}"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        setup = policy.worker_setup(
            initializer=initializer,
            initargs=tuple(initargs),
            worker_state=worker_state,
            shared=shared,
            max_tasks=max_tasks_per_worker,
            max_memory=max_worker_memory,
            context=context,
            thread_name_prefix=thread_name_prefix,
            client=client,
            workers=workers,
        )
        self.policy = policy
        chosen = _backends.create(backend, setup)
        refusal = chosen.capabilities.no_timeouts
        if options is not None and options.timeout is not None and refusal:
            chosen.abort_start()
            raise ValueError(refusal)
        if workers is None:
            workers = chosen.default_size()
        self.engine = Engine(chosen, workers, max_tasks_per_worker=max_tasks_per_worker)
        self._admission = LimiterAdmission(limiter, self.engine) if limiter is not None else None
        self.options = options or TaskOptions()
        self._feeders: weakref.WeakSet[Feeder] = weakref.WeakSet()
        self._accepting = True
        self.engine.start()
        _lifetime.track(self.engine, finish_at_exit=finish_at_exit)

    @property
    def size(self) -> int:
        return self.engine.size

    # --- jobs ----------------------------------------------------------------------------

    def _job(
        self,
        fn: Callable[..., Any],
        mode: CallMode,
        sink: Sink,
        options: TaskOptions,
        sizer: ChunkSizer,
        items: Sequence[Any] | None = None,
        limiter: CapacityLimiter | RateLimiter | None = None,
    ) -> Job:
        """A job of this pool; with a limiter (the call's, or else the pool's), its tasks go
        out as the limiter allows."""
        admission = self._admission
        if limiter is not None:
            admission = LimiterAdmission(limiter, self.engine, one_job=True)
        if admission is None:
            return Job(fn, mode, sink, options, sizer, items)
        releasing = ReleasingSink(sink, admission, 0)
        job = Job(fn, mode, releasing, options, sizer, items, admission=admission)
        releasing.job_id = job.id
        return job

    def sizer(self, chunksize: int | None) -> ChunkSizer:
        if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
        return ChunkSizer(chunksize, self.engine.size, self.engine.backend.capabilities.pacing)

    def submit_call(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        sink: Sink,
        options: TaskOptions | None = None,
    ) -> Job:
        sink = _holding_queues(sink, (*args, *kwargs.values()))
        job = self._job(
            fn, CallMode.CALL, sink, options or self.options, self.sizer(1), [(tuple(args), kwargs)]
        )
        _submit(self.engine, job)
        return job

    def submit_items(
        self,
        fn: Callable[..., Any],
        items: Sequence[Any],
        sink: Sink,
        *,
        star: bool = False,
        chunksize: int | None = None,
        options: TaskOptions | None = None,
        progress: ProgressArg = False,
        limiter: CapacityLimiter | RateLimiter | None = None,
    ) -> Submitted:
        """One job over ``items``: ``fn(item)``, or ``fn(*item)`` with ``star``."""
        sink = _holding_queues(sink, items[:1])
        sizer = self.sizer(chunksize)
        job = self._job(fn, _mode(star), sink, options or self.options, sizer, items, limiter)
        stop_progress = follow(self.engine, job, progress, len(items))
        _submit(self.engine, job)
        return Submitted(job, stop_progress)

    def stream(self, fn: Callable[..., Any], sink: Sink, *, chunksize: int | None = None) -> Job:
        """A submitted job whose items are pushed as they come (``engine.push``), and
        ended by ``engine.end_input``: a pipeline stage's."""
        job = self._job(fn, CallMode.SINGLE, sink, self.options, self.sizer(chunksize))
        self.engine.submit(job)
        return job

    @property
    def limiter_refusals(self) -> int:
        """Times the pool's limiter made a task wait (0 without one)."""
        return self._admission.refusals if self._admission is not None else 0

    def iterate(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        *,
        star: bool = False,
        ordered: bool = True,
        chunksize: int | None = None,
        options: TaskOptions | None = None,
        timeout_error: type[BaseException] = TimeoutError,
        progress: ProgressArg = False,
        progress_total: int | None = None,
        cancel_on_drop: bool = True,
        chunk_granular_input_errors: bool = False,
        limiter: CapacityLimiter | RateLimiter | None = None,
    ) -> ResultIterator[Any]:
        """Run ``fn`` over a (possibly endless) iterable, reading it lazily.

        ``cancel_on_drop``: dropping the iterator withdraws what has not started.
        ``chunk_granular_input_errors``: with a fixed ``chunksize``, an exception from the
        input replaces the whole chunk it interrupted (``multiprocessing``'s behaviour).
        """
        iterator = iter(iterable)
        buffer = ResultBuffer(ordered)
        sink = _HoldingQueues(buffer, [])  # what the first item carries, once it is read
        sizer = self.sizer(chunksize)
        job = self._job(fn, _mode(star), sink, options or self.options, sizer, limiter=limiter)
        stop_progress = follow(self.engine, job, progress, progress_total)
        self.engine.submit(job)
        align = chunksize if chunk_granular_input_errors else None
        feeder = Feeder(self.engine, job, iterator, align=align, on_first=sink.hold_queues_in)
        buffer.on_take = feeder.release
        try:
            feeder.start()
        except BaseException:
            # No thread will read the input (e.g. at interpreter shutdown): withdraw the
            # job, or the pool would wait for its input forever.
            self.engine.cancel(job)
            raise
        self._feeders.add(feeder)
        return ResultIterator(
            self.engine, job, buffer, feeder, timeout_error, cancel_on_drop, stop_progress
        )

    def iterate_sequence(
        self,
        fn: Callable[..., Any],
        items: Sequence[Any],
        *,
        star: bool = False,
        chunksize: int | None = None,
        timeout_error: type[BaseException] = TimeoutError,
        cancel_on_drop: bool = True,
    ) -> ResultIterator[Any]:
        """Results of ``fn`` over a sequence already in memory, in order, as they arrive.

        The fast path of ``iterate``: chunks are cut straight from the sequence, with no
        feeder thread and no read-ahead window (the input costs no more memory to read).
        """
        buffer = ResultBuffer(ordered=True)
        sink = _holding_queues(buffer, items[:1])
        job = self._job(fn, _mode(star), sink, self.options, self.sizer(chunksize), items)
        _submit(self.engine, job)
        return ResultIterator(self.engine, job, buffer, None, timeout_error, cancel_on_drop)

    # --- accepting and cancelling -----------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting

    def check_accepting(self) -> None:
        """Raise the face's closed-pool error once ``close`` or ``terminate`` was called."""
        if not self._accepting:
            raise self.policy.closed_error()

    @property
    def can_cancel_running(self) -> bool:
        """A running task can be stopped (its worker is stopped and replaced)."""
        return self.engine.backend.capabilities.can_kill

    def cancel(self, job: Job, *, running: bool = False) -> int:
        """Withdraw the job's tasks not yet started (and, with ``running``, stop the rest)."""
        return self.engine.cancel(job, running=running)

    # --- shutdown --------------------------------------------------------------------------

    def close(self) -> None:
        self._accepting = False
        self.engine.close()

    def join(self, timeout: float | None = None) -> bool:
        # join() means "wait for everything submitted": lazy inputs are read to the end
        # even if nobody consumes their results (the stdlib's semantics).
        deadline = Deadline(timeout)
        feeders = list(self._feeders)
        for feeder in feeders:
            feeder.unbound()
        finished = self.engine.join(deadline.remaining())
        # Every input has ended by now (a job is complete only then): the threads that
        # read them are at their last line.
        finished = all([feeder.join(deadline.remaining()) for feeder in feeders]) and finished
        if finished:
            _lifetime.forget(self.engine)
            self._close_admission()
        return finished

    def terminate(self) -> None:
        self._accepting = False
        feeders = list(self._feeders)
        for feeder in feeders:
            feeder.stop()
        self.engine.terminate()
        self.engine.join(timeout=TERMINATE_JOIN_S)
        for feeder in feeders:
            # One blocked inside its input (a slow generator) cannot be interrupted; it
            # stops reading when the input yields, and is not waited for longer.
            feeder.join(FEEDER_JOIN_S)
        _lifetime.forget(self.engine)
        self._close_admission()

    def _close_admission(self) -> None:
        if self._admission is not None:
            self._admission.close()

    def abandon(self) -> None:
        """The face was dropped unclosed (its finalizer): stop the workers, wait for none."""
        self._accepting = False
        self.engine.terminate()
        self._close_admission()

    def statistics(self) -> PoolStats:
        return self.engine.statistics()

    def subscribe(self, subscriber: Subscriber) -> Subscription:
        if not callable(subscriber):
            raise TypeError(
                f"subscribe() takes a callable, not {type(subscriber).__name__} {subscriber!r:.80}"
            )
        return Subscription(self.engine, subscriber)


def _mode(star: bool) -> CallMode:
    return CallMode.STAR if star else CallMode.SINGLE


__all__ = ["BackendName", "PoolCore", "Submitted"]


class _HoldingQueues(SinkWrapper):
    """A job's sink, with producer ends of the queues its tasks were given.

    Held from submission until the job ends (``close``, or ``abort`` when the pool
    stops), so that the tasks count as the queues' producers while they wait in the
    pool's own queue too (``docs/queues.md``). Only the first item of a map is looked
    at: maps are taken to carry the same queue in every item. A lazy map's first item
    is read on its feeder thread, which hands it to ``hold_queues_in``.
    """

    def __init__(self, sink: Sink, ends: list[int]) -> None:
        super().__init__(sink)
        self._ends = ends
        self._released = False
        self._lock = threading.Lock()  # the feeder holds; the engine's thread releases

    def hold_queues_in(self, items: Sequence[Any]) -> None:
        """Hold producer ends of the queues in the first of ``items`` until the job ends."""
        ends = producer_ends_for(items[:1])
        with self._lock:
            if not self._released:
                self._ends.extend(ends)
                return
        close_fds(ends)  # the job ended (the pool stopped) before its input was read

    def close(self, total: int) -> None:
        try:
            self.sink.close(total)
        finally:
            self.release()

    def abort(self, exc: BaseException) -> None:
        try:
            self.sink.abort(exc)
        finally:
            self.release()

    def release(self) -> None:
        with self._lock:
            self._released = True
            ends, self._ends = self._ends, []
        close_fds(ends)


def _holding_queues(sink: Sink, values: Sequence[Any]) -> Sink:
    ends = producer_ends_for(values)
    return _HoldingQueues(sink, ends) if ends else sink


def _submit(engine: Engine, job: Job) -> None:
    """``engine.submit``, letting go of the job's queue ends if it is refused."""
    try:
        engine.submit(job)
    except BaseException:
        if isinstance(job.sink, _HoldingQueues):
            job.sink.release()
        raise
