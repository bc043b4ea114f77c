"""What every public pool shares: building the engine, turning calls into jobs, shutdown.

The drop-in ``Pool``/``ThreadPool``, the executors and the modern ``WorkerPool`` are thin
faces over ``PoolCore``; they differ only in their signatures, result types and error
messages.
"""

from __future__ import annotations

import atexit
import collections
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.context import BaseContext
from typing import Any, Generic, Literal, TypeVar

from ._compat import Flavor
from ._cpus import available_cpus
from ._engine import Backend, Engine
from ._execute import CallMode
from ._feeder import Feeder
from ._process import ProcessBackend
from ._progress import ProgressArg, with_progress
from ._results import ResultBuffer, Run
from ._scheduler import ChunkSizer, Job, Sink, TaskOptions
from ._stats import PoolStats
from ._thread import ThreadBackend

T = TypeVar("T")
BackendName = Literal["process", "thread"]

# Engines alive at interpreter exit, and whether to let them finish their work first
# (executors, as the stdlib's do) or terminate them (pools, as the stdlib's finalizer does).
# Either way no worker outlives the interpreter.
_live_engines: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()
_live_lock = threading.Lock()


@atexit.register
def _stop_live_engines() -> None:
    with _live_lock:
        engines = list(_live_engines.items())
    # A program ended by Ctrl-C wants to stop, not to wait for running tasks: the
    # interpreter records the uncaught exception before it runs atexit hooks.
    interrupted = isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)
    for engine, finish in engines:
        if finish and not interrupted:
            engine.close()
            engine.join()
        else:
            engine.terminate()
    for engine, _ in engines:
        engine.join(timeout=5)


def _terminate(engine: Engine) -> None:
    engine.terminate()


class PoolCore:
    """The engine plus the bookkeeping the public faces share."""

    def __init__(
        self,
        backend: BackendName,
        workers: int | None,
        *,
        context: BaseContext | str | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Sequence[Any] = (),
        max_tasks_per_worker: int | None = None,
        worker_state: Callable[[], Any] | None = None,
        options: TaskOptions | None = None,
        finish_at_exit: bool = False,
        max_worker_memory: int | None = None,
        thread_name_prefix: str = "conveyor-worker",
        flavor: Flavor = Flavor.CONVEYOR,
    ) -> None:
        if workers is None:
            workers = available_cpus()
        if max_worker_memory is not None and (
            not isinstance(max_worker_memory, int) or max_worker_memory <= 0
        ):
            raise ValueError(
                f"max_worker_memory must be a positive number of bytes, not {max_worker_memory!r}"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        backend_obj: Backend
        if backend == "process":
            backend_obj = ProcessBackend(
                context,
                initializer=initializer,
                initargs=tuple(initargs),
                worker_state=worker_state,
                max_tasks=max_tasks_per_worker,
                max_memory=max_worker_memory,
                flavor=flavor,
            )
        else:
            backend_obj = ThreadBackend(
                initializer=initializer,
                initargs=tuple(initargs),
                worker_state=worker_state,
                max_tasks=max_tasks_per_worker,
                name_prefix=thread_name_prefix,
            )
        self.engine = Engine(backend_obj, workers, max_tasks_per_worker=max_tasks_per_worker)
        self.options = options or TaskOptions()
        self._feeders: weakref.WeakSet[Feeder] = weakref.WeakSet()
        self.engine.start()
        with _live_lock:
            _live_engines[self.engine] = finish_at_exit

    @property
    def size(self) -> int:
        return self.engine.size

    # --- jobs ----------------------------------------------------------------------------

    def sizer(self, chunksize: int | None) -> ChunkSizer:
        if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
        return ChunkSizer(chunksize, self.engine.size)

    def submit_call(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        sink: Sink,
        options: TaskOptions | None = None,
    ) -> Job:
        job = Job(
            fn, CallMode.CALL, sink, options or self.options, self.sizer(1), [(tuple(args), kwargs)]
        )
        self.engine.submit(job)
        return job

    def submit_items(
        self,
        fn: Callable[..., Any],
        items: Sequence[Any],
        mode: CallMode,
        sink: Sink,
        *,
        chunksize: int | None = None,
        options: TaskOptions | None = None,
    ) -> Job:
        job = Job(fn, mode, sink, options or self.options, self.sizer(chunksize), items)
        self.engine.submit(job)
        return job

    def iterate(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        mode: CallMode,
        *,
        ordered: bool = True,
        chunksize: int | None = None,
        options: TaskOptions | None = None,
        timeout_error: type[BaseException] = TimeoutError,
        progress: ProgressArg = False,
        progress_total: int | None = None,
        cancel_on_drop: bool = True,
        chunk_granular_input_errors: bool = False,
    ) -> ResultIterator[Any]:
        """Run ``fn`` over a (possibly endless) iterable, reading it lazily.

        ``cancel_on_drop``: dropping the iterator withdraws what has not started.
        ``chunk_granular_input_errors``: with a fixed ``chunksize``, an exception from the
        input replaces the whole chunk it interrupted (``multiprocessing``'s behaviour).
        """
        iterator = iter(iterable)
        buffer = ResultBuffer(ordered)
        sink, stop_progress = with_progress(buffer, progress, progress_total)
        job = Job(fn, mode, sink, options or self.options, self.sizer(chunksize))
        self.engine.submit(job)
        align = chunksize if chunk_granular_input_errors else None
        feeder = Feeder(self.engine, job, iterator, align=align)
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
        mode: CallMode,
        *,
        chunksize: int | None = None,
        timeout_error: type[BaseException] = TimeoutError,
        cancel_on_drop: bool = True,
    ) -> ResultIterator[Any]:
        """Results of ``fn`` over a sequence already in memory, in order, as they arrive.

        The fast path of ``iterate``: chunks are cut straight from the sequence, with no
        feeder thread and no read-ahead window (the input costs no more memory to read).
        """
        buffer = ResultBuffer(ordered=True)
        job = Job(fn, mode, buffer, self.options, self.sizer(chunksize), items)
        self.engine.submit(job)
        return ResultIterator(self.engine, job, buffer, None, timeout_error, cancel_on_drop)

    # --- shutdown --------------------------------------------------------------------------

    def close(self) -> None:
        self.engine.close()

    def join(self, timeout: float | None = None) -> bool:
        # join() means "wait for everything submitted": lazy inputs are read to the end
        # even if nobody consumes their results (the stdlib's semantics).
        for feeder in list(self._feeders):
            feeder.unbound()
        finished = self.engine.join(timeout)
        if finished:
            with _live_lock:
                _live_engines.pop(self.engine, None)
        return finished

    def terminate(self) -> None:
        for feeder in list(self._feeders):
            feeder.stop()
        self.engine.terminate()
        self.engine.join(timeout=10)
        with _live_lock:
            _live_engines.pop(self.engine, None)

    def stats(self) -> PoolStats:
        return self.engine.stats()


class ResultIterator(Generic[T]):
    """Iterator over a lazy map's results (``imap``); also ``next(timeout)``.

    Dropping it (or breaking out of the loop) cancels the items not yet started and stops
    reading the input.

    Example::

        for value in pool.imap(work, endless()):
            if good_enough(value):
                break          # no more input is read, queued items are withdrawn
    """

    def __init__(
        self,
        engine: Engine,
        job: Job,
        buffer: ResultBuffer,
        feeder: Feeder | None,
        timeout_error: type[BaseException],
        cancel_on_drop: bool = True,
        stop_progress: Callable[[], None] | None = None,
    ) -> None:
        self._buffer = buffer
        self._stop_progress = stop_progress
        self._runs: collections.deque[Run] = collections.deque()
        self._values: list[Any] = []  # the run being consumed, from ``_position`` on
        self._position = 0
        self._timeout_error = timeout_error
        self._job = job
        self._engine = engine
        self._feeder = feeder
        self._stream_rest: list[Any] = []  # stream(): the run in hand, reversed
        buffer.on_discard = engine.count_discarded
        if cancel_on_drop:
            # vars(self), not self: the finalizer must not keep the iterator alive, and it
            # reads what the iterator held but never handed out (see _unread).
            weakref.finalize(self, _drop, engine, job, feeder, buffer, vars(self), stop_progress)

    def __iter__(self) -> ResultIterator[T]:
        return self

    def next(self, timeout: float | None = None) -> T:
        position, values = self._position, self._values
        if position < len(values):  # the common case: the run in hand goes on
            self._position = position + 1
            value = values[position]
            values[position] = None  # the caller may drop it: we must not keep it alive
            return value
        return self._next_run(timeout)

    def _next_run(self, timeout: float | None) -> T:
        while True:
            if not self._runs:
                try:
                    self._runs.extend(self._buffer.take(timeout, self._timeout_error))
                except KeyboardInterrupt:
                    self._stopped_waiting()
                    raise
            success, payload = self._runs.popleft()
            if not success:
                self._values, self._position = [], 0
                self._stopped_waiting()  # the bar stops where the error reached the caller
                raise payload
            if payload:
                self._values, self._position = payload, 1
                value, payload[0] = payload[0], None
                return value

    __next__ = next

    def stream(self) -> Iterator[T]:
        """Every remaining result, for a consumer that only iterates (``Executor.map``).

        Faster than ``next()`` per result: a run's values are handed out from a
        generator without a method call each, and each value is let go of as it is
        handed out (the caller may drop it). An error ends the stream, as it ends a
        ``map`` in the stdlib.
        """
        while True:
            try:
                yield self.next()  # the slow path: also fetches the next run
            except StopIteration:
                return
            rest = self._values[self._position :]
            self._values.clear()
            self._values, self._position = [], 0
            rest.reverse()
            self._stream_rest = rest
            pop = rest.pop
            while rest:
                yield pop()

    def cancel(self, error: BaseException | None = None) -> None:
        """Withdraw what has not started and stop reading the input.

        With ``error``, the consumer goes on: results not yet arrived raise ``error``
        instead of being waited for. Without, the consumer is done: results it did not
        take are dropped and counted (``results_discarded``).
        """
        if error is not None:
            _abandon(self._engine, self._job, self._feeder)
            self._buffer.abort(error)
            return
        _drop(self._engine, self._job, self._feeder, self._buffer, vars(self), self._stop_progress)

    def _stopped_waiting(self) -> None:
        if self._stop_progress is not None:
            self._stop_progress()

    @property
    def items_read(self) -> int:
        """How many items have been read from the input so far."""
        if self._feeder is None:  # a sequence: it was all there from the start
            return self._job.total or 0
        return self._feeder.items_read


def _abandon(engine: Engine, job: Job, feeder: Feeder | None) -> None:
    if feeder is not None:
        feeder.stop()
    if not job.complete:
        engine.cancel(job)


def _drop(
    engine: Engine,
    job: Job,
    feeder: Feeder | None,
    buffer: ResultBuffer,
    state: dict[str, Any],
    stop_progress: Callable[[], None] | None = None,
) -> None:
    """The consumer is done: withdraw the rest, count and let go of what it never took."""
    if stop_progress is not None:
        stop_progress()
    _abandon(engine, job, feeder)
    unread = _unread(state)
    state["_values"], state["_position"], state["_stream_rest"] = [], 0, []
    state["_runs"].clear()
    if unread:
        engine.count_discarded(unread)
    buffer.discard()


def _unread(state: dict[str, Any]) -> int:
    """Results a ResultIterator holds (``vars()`` of it) but has not handed out."""
    in_runs = sum(len(payload) for ok, payload in state["_runs"] if ok)
    return len(state["_values"]) - state["_position"] + len(state["_stream_rest"]) + in_runs


__all__ = ["BackendName", "PoolCore", "ResultIterator", "_terminate"]
