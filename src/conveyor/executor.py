"""Drop-in replacements for ``concurrent.futures.ProcessPoolExecutor`` and ``ThreadPoolExecutor``.

They are real :class:`concurrent.futures.Executor` subclasses returning real
:class:`concurrent.futures.Future` objects, so ``wait`` and ``as_completed`` work. Unlike the
stdlib, a worker that dies fails only the task it was running
(:class:`~conveyor.WorkerCrashedError`, a ``BrokenProcessPool``) and the executor goes on;
``map`` reads its input lazily instead of submitting it all at once (the stdlib's
behaviour, gh-74508, which 3.14's ``buffersize`` only bounds).

Example::

    from conveyor import ProcessPoolExecutor
    from concurrent.futures import as_completed

    with ProcessPoolExecutor(4) as ex:
        futures = [ex.submit(pow, 2, n) for n in range(10)]
        print(sorted(f.result() for f in as_completed(futures)))
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any, TypeVar, cast

from . import _backends
from ._compat import on_interpreter_exit
from ._cpus import available_cpus
from ._deadline import Deadline
from ._engine._jobs import Job, TaskOptions
from ._frontend._iterate import ResultIterator
from ._frontend._observable import Observable
from ._frontend._policy import FUTURES
from ._frontend._pool_core import BackendName, PoolCore
from ._frontend._results import FutureSink
from .errors import PoolClosedError

T = TypeVar("T")

__all__ = ["ProcessPoolExecutor", "ThreadPoolExecutor"]

_interpreter_exiting = False


def _refuse_new_work() -> None:
    global _interpreter_exiting
    _interpreter_exiting = True


on_interpreter_exit(_refuse_new_work)


class _PoolExecutor(Observable, futures.Executor):
    """What both executors share: submit, map, shutdown over a :class:`PoolCore`."""

    _backend: BackendName = "process"

    def __init__(
        self,
        max_workers: int | None,
        *,
        context: BaseContext | str | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        worker_state: Callable[[], Any] | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        thread_name_prefix: str = "conveyor-worker",
        max_worker_memory: int | None = None,
        backend: BackendName | None = None,
        client: Any = None,
    ) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        self._pending: dict[Future[Any], Job] = {}
        self._maps: weakref.WeakSet[ResultIterator[Any]] = weakref.WeakSet()
        self._core = PoolCore(
            _backends.choose(backend, self._backend),
            max_workers,
            client=client,
            context=context,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_worker=max_tasks_per_child,
            worker_state=worker_state,
            options=TaskOptions(timeout=task_timeout, retries=retries),
            finish_at_exit=True,
            thread_name_prefix=thread_name_prefix,
            max_worker_memory=max_worker_memory,
            policy=FUTURES,
        )
        self._max_workers = self._core.size
        # Dropped without shutdown(): finish what was submitted (its futures may still be
        # held), then let the workers go, as the stdlib's executors do.
        self._finalizer = weakref.finalize(self, PoolCore.close, self._core)

    def _check_accepting(self) -> None:
        self._core.check_accepting()
        if _interpreter_exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)``; return a :class:`concurrent.futures.Future`."""
        # No lock of the executor's: the engine's own lock orders a submit and a
        # shutdown, and one held across the pickling and the write made sixteen calling
        # threads queue behind each other (0.8x multiprocessing.Pool's throughput).
        self._check_accepting()
        future: Future[T] = Future()
        try:
            job = self._core.submit_call(fn, args, kwargs, FutureSink(future))
        except PoolClosedError:  # shutdown() won the race since the check above
            raise self._core.policy.closed_error() from None
        if not future.done():
            self._pending[future] = job
            future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[Any]) -> None:
        self._pending.pop(future, None)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """Like :func:`map`, in parallel. One list, tuple or range is cut into chunks in
        place; any other input is read lazily, a few chunks ahead of the consumer.

        ``timeout`` bounds the wait for each result, counted from this call (stdlib
        semantics). ``chunksize`` only sets the first chunks' size for processes; later
        ones adapt to measured task time unless ``chunksize`` is greater than 1.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        with self._shutdown_lock:
            self._check_accepting()
            # As in the stdlib, work submitted by map() runs even if the iterator is
            # dropped unused; one that was started and then closed cancels the rest.
            fixed_chunksize = chunksize if chunksize > 1 else None
            if len(iterables) == 1 and isinstance(iterables[0], (list, tuple, range)):
                # Already in memory: no need to read it lazily on a feeder thread.
                results = self._core.iterate_sequence(
                    fn,
                    iterables[0],
                    chunksize=fixed_chunksize,
                    timeout_error=futures.TimeoutError,
                    cancel_on_drop=False,
                )
            else:
                results = self._core.iterate(
                    fn,
                    zip(*iterables),  # noqa: B905 - the shortest input wins, as in map()
                    star=True,
                    chunksize=fixed_chunksize,
                    timeout_error=futures.TimeoutError,
                    cancel_on_drop=False,
                )
            self._maps.add(results)
        if timeout is None:
            return _untimed(results)
        return _timed(results, Deadline(timeout))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; optionally cancel what has not started; optionally wait."""
        with self._shutdown_lock:
            self._shutdown = True
            if cancel_futures:
                for future, job in list(self._pending.items()):
                    if future.cancel():
                        self._core.cancel(job)
                for results in list(self._maps):
                    results.cancel(futures.CancelledError())
            self._core.close()
            self._finalizer.detach()
        if wait:
            self._core.join()

    def terminate_workers(self) -> None:
        """Stop every worker now; tasks not finished fail with ``TaskCancelledError``.

        Also shuts the executor down. (The API of Python 3.14's executors, on every
        version; a thread cannot be stopped, so thread workers finish their current task.)
        """
        self.shutdown(wait=False, cancel_futures=True)
        self._core.terminate()

    kill_workers = terminate_workers  # workers are always stopped with SIGKILL

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            # Ctrl-C means stop, not "finish the running tasks first" (the stdlib's
            # shutdown(wait=True) here would hang for as long as they run).
            self.terminate_workers()
        else:
            self.shutdown(wait=True)


def _timed(results: Any, deadline: Deadline) -> Iterator[Any]:
    try:
        while True:
            try:
                yield results.next(deadline.remaining())
            except StopIteration:
                return
    finally:
        results.cancel()  # closed before the end: withdraw what has not started


class _MapResults(itertools.chain[Any]):
    """What ``map`` returns: each run's values handed out by ``chain``, in C.

    Only a run (a chunk's results) costs bytecode: a million tiny results come at
    6.7 M/s this way, 6.1 M/s through a generator. ``close()`` (or dropping it once
    started) withdraws the tasks not yet started, as closing the stdlib's does.
    """

    _runs: Iterator[Any]

    def close(self) -> None:
        self._runs.close()  # type: ignore[attr-defined]


def _untimed(results: Any) -> Iterator[Any]:
    runs = _runs_then_cancel(results)
    out = cast(_MapResults, _MapResults.from_iterable(runs))
    out._runs = runs
    return out


def _runs_then_cancel(results: Any) -> Iterator[Any]:
    try:
        yield from results.runs()
    finally:
        results.cancel()  # closed or dropped before the end: withdraw what has not started


class ProcessPoolExecutor(_PoolExecutor, futures.ProcessPoolExecutor):
    """``concurrent.futures.ProcessPoolExecutor``, supervised.

    A subclass of the stdlib's class, so that code which checks for one accepts it; every
    public method is conveyor's own.

    Extra keywords: ``worker_state``, ``task_timeout`` (seconds per task), ``retries``
    (re-runs after a worker crash), ``max_worker_memory`` (bytes of RSS after which a
    worker is replaced), ``backend="dask"`` with ``client`` (a ``distributed.Client``, a
    scheduler address, or None for a ``LocalCluster`` of its own) to run on Dask; the
    ``CONVEYOR_BACKEND`` environment variable does the same without editing the code.

    Example::

        with ProcessPoolExecutor(max_workers=2) as ex:
            print(list(ex.map(pow, [2, 3], [5, 2])))     # [32, 9]
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        worker_state: Callable[[], Any] | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        max_worker_memory: int | None = None,
        backend: BackendName | None = None,
        client: Any = None,
    ) -> None:
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        super().__init__(
            max_workers,
            context=mp_context,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_child=max_tasks_per_child,
            worker_state=worker_state,
            task_timeout=task_timeout,
            retries=retries,
            max_worker_memory=max_worker_memory,
            backend=backend,
            client=client,
        )


class ThreadPoolExecutor(_PoolExecutor, futures.ThreadPoolExecutor):
    """``concurrent.futures.ThreadPoolExecutor`` over conveyor's engine.

    A subclass of the stdlib's class, so that ``loop.set_default_executor()`` and other
    code that checks for one accepts it; every public method is conveyor's own.

    Example::

        with ThreadPoolExecutor(max_workers=16) as ex:
            sizes = list(ex.map(len, ["a", "bb"]))     # [1, 2]
    """

    _backend: BackendName = "thread"
    _counter = itertools.count()

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        worker_state: Callable[[], Any] | None = None,
        task_timeout: float | None = None,
    ) -> None:
        if max_workers is None:
            # The stdlib's default: I/O-bound work wants more threads than CPUs.
            max_workers = min(32, available_cpus() + 4)
        self._thread_name_prefix = thread_name_prefix or (
            f"ThreadPoolExecutor-{next(self._counter)}"
        )
        super().__init__(
            max_workers,
            initializer=initializer,
            initargs=initargs,
            worker_state=worker_state,
            task_timeout=task_timeout,
            thread_name_prefix=self._thread_name_prefix,
        )
