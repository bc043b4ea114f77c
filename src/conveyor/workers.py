"""conveyor's own API: ``WorkerPool`` and the one-call ``conveyor.map``.

Per-task ``timeout`` and ``retries``, progress bars, lazy bounded input, and a shared
pool that repeated ``conveyor.map`` calls reuse (start-up is paid once).

Example::

    import conveyor

    squares = conveyor.map(lambda x: x * x, range(1000), progress=True)

    with conveyor.WorkerPool(4, timeout=30, retries=2) as pool:
        for row in pool.imap(parse, open("big.csv"), ordered=False):
            ...
"""

from __future__ import annotations

import enum
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

from . import _backends
from ._engine._jobs import Job, TaskOptions
from ._frontend._iterate import ResultIterator
from ._frontend._observable import Observable
from ._frontend._policy import CONVEYOR
from ._frontend._pool_core import BackendName, PoolCore
from ._frontend._progress import ProgressArg
from ._frontend._results import FutureSink, MapResult
from ._shared._limiters import CapacityLimiter, RateLimiter

T = TypeVar("T")

__all__ = ["WorkerPool", "imap", "map", "shared_pool", "shutdown_shared_pools", "submit"]


class _Default(enum.Enum):
    """The type of ``DEFAULT``: "use the pool's own setting" (so ``None`` stays a value)."""

    DEFAULT = "<pool default>"

    def __repr__(self) -> str:
        return self.value


DEFAULT = _Default.DEFAULT


class _TaskFuture(Future[T]):
    """A future that knows its task's job, so that ``WorkerPool.cancel`` finds it.

    Carried on the future rather than in a table of the pool's: a table costs an entry
    and a done-callback per submit, paid by the supervisor on every round trip.
    """

    # Weakly: the job refers to its sink, which refers to this future, and a cycle
    # would keep a large result alive until the garbage collector next runs.
    job: Callable[[], Job | None] = staticmethod(lambda: None)
    core: PoolCore | None = None


class WorkerPool(Observable):
    """A supervised pool of worker processes (or threads) with conveyor's modern API.

    ``timeout``: seconds a task may run before it is stopped (its worker is replaced) and
    fails with :class:`~conveyor.TaskTimeoutError`. ``retries``: how many times a task whose
    worker crashed is run again (default 1). Both can be overridden per call.
    ``worker_state``: a factory run once per worker; tasks get the object from
    :func:`conveyor.worker_state`. ``shared``: a read-only object (a model, a table,
    NumPy arrays) every worker reads through :func:`conveyor.shared`; pickled once, its
    buffers in shared memory once for the machine, whatever the start method.
    ``limiter``: a :class:`~conveyor.CapacityLimiter` or :class:`~conveyor.RateLimiter`
    the pool obeys when it sends tasks (held from a task's dispatch to its outcome, for a
    capacity limit), together with whoever else holds it.
    ``max_worker_memory``: bytes of resident memory after
    which a process worker is replaced (checked between chunks), so a leak cannot take the
    machine down.

    Leaving a ``with`` block normally waits for the work; leaving it by an exception
    (Ctrl-C included) terminates the pool at once.

    Example::

        with WorkerPool(4, timeout=10) as pool:
            results = pool.map(score, items, progress=True)
            future = pool.submit(score, one_item)
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        backend: BackendName | None = None,
        client: Any = None,
        context: BaseContext | str | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Sequence[Any] = (),
        worker_state: Callable[[], Any] | None = None,
        shared: Any = None,
        limiter: CapacityLimiter | RateLimiter | None = None,
        max_tasks_per_worker: int | None = None,
        max_worker_memory: int | None = None,
        timeout: float | None = None,
        retries: int = 1,
    ) -> None:
        name = _backends.choose(backend, "process")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive int or None, not {workers!r}")
        self._core = PoolCore(
            name,
            workers,
            client=client,
            context=context,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_worker=max_tasks_per_worker,
            worker_state=worker_state,
            shared=shared,
            limiter=limiter,
            options=TaskOptions(timeout=timeout, retries=retries),
            max_worker_memory=max_worker_memory,
            policy=CONVEYOR,
        )

    @property
    def workers(self) -> int:
        """How many workers the pool runs."""
        return self._core.size

    def _options(self, timeout: Any, retries: Any) -> TaskOptions:
        base = self._core.options
        return TaskOptions(
            timeout=base.timeout if timeout is DEFAULT else timeout,
            retries=base.retries if retries is DEFAULT else retries,
        )

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` in a worker; return a :class:`~concurrent.futures.Future`."""
        self._core.check_accepting()
        future: _TaskFuture[T] = _TaskFuture()
        future.job = weakref.ref(self._core.submit_call(fn, args, kwargs, FutureSink(future)))
        future.core = self._core
        return future

    def cancel(self, future: Future[Any]) -> bool:
        """Cancel a task from :meth:`submit`, even one that is running.

        A waiting task is withdrawn (``future.cancelled()`` is then True). A running task
        in a process pool is stopped by stopping its worker, which is replaced; its future
        fails with :class:`~conveyor.TaskCancelledError` (a ``CancelledError``). A running
        thread cannot be stopped: returns False. Returns False if the task already ended.

        Example::

            fut = pool.submit(long_job)
            pool.cancel(fut)
        """
        job = None
        if isinstance(future, _TaskFuture) and future.core is self._core:
            job = future.job()
        if future.cancel():
            if job is not None:
                self._core.cancel(job)
            return True
        if job is None or future.done() or not self._core.can_cancel_running:
            return False
        self._core.cancel(job, running=True)
        return True

    def map(
        self,
        fn: Callable[..., T],
        items: Iterable[Any],
        *,
        star: bool = False,
        chunksize: int | None = None,
        timeout: float | _Default | None = DEFAULT,
        retries: int | _Default = DEFAULT,
        progress: ProgressArg = False,
        limiter: CapacityLimiter | RateLimiter | None = None,
    ) -> list[T]:
        """``[fn(x) for x in items]`` in parallel (``fn(*x)`` with ``star=True``).

        Raises the first task error; the tasks not yet started are then withdrawn.
        ``limiter``: this call's tasks are sent as it allows (instead of the pool's).
        """
        self._core.check_accepting()
        options = self._options(timeout, retries)
        if not isinstance(items, (list, tuple, range)):
            return list(
                self.imap(
                    fn,
                    items,
                    star=star,
                    chunksize=chunksize,
                    timeout=timeout,
                    retries=retries,
                    progress=progress,
                    limiter=limiter,
                )
            )
        result: MapResult[T] = MapResult(len(items))
        job, stop_progress = self._core.submit_items(
            fn,
            items,
            result,
            star=star,
            chunksize=chunksize,
            options=options,
            progress=progress,
            limiter=limiter,
        )
        try:
            return result.get()
        finally:
            if stop_progress is not None:
                stop_progress()  # before an exception (a task's, Ctrl-C) reaches the caller
            if not job.complete:
                self._core.cancel(job)

    def starmap(
        self, fn: Callable[..., T], items: Iterable[Iterable[Any]], **options: Any
    ) -> list[T]:
        """``[fn(*x) for x in items]`` in parallel; same options as :meth:`map`."""
        return self.map(fn, items, star=True, **options)

    def imap(
        self,
        fn: Callable[..., T],
        items: Iterable[Any],
        *,
        ordered: bool = True,
        star: bool = False,
        chunksize: int | None = None,
        timeout: float | _Default | None = DEFAULT,
        retries: int | _Default = DEFAULT,
        progress: ProgressArg = False,
        limiter: CapacityLimiter | RateLimiter | None = None,
    ) -> ResultIterator[T]:
        """Lazy map: ``items`` is read only a few chunks ahead of the consumer.

        Breaking out of the loop (or dropping the iterator) stops reading and withdraws
        the tasks not yet started. ``ordered=False`` yields results as they finish.
        """
        self._core.check_accepting()
        total = len(items) if isinstance(items, Sequence) else None
        return self._core.iterate(
            fn,
            items,
            star=star,
            ordered=ordered,
            chunksize=chunksize,
            options=self._options(timeout, retries),
            progress=progress,
            progress_total=total,
            limiter=limiter,
        )

    def close(self) -> None:
        """Accept no more work; workers exit once what was submitted is done."""
        self._core.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers to exit (after :meth:`close`); True if they did in time."""
        return self._core.join(timeout)

    def terminate(self) -> None:
        """Stop now: kill the workers; unfinished tasks fail with ``TaskCancelledError``."""
        self._core.terminate()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            self.join()
        else:
            self.terminate()


# --- one-call API over a shared pool -------------------------------------------------------

_shared: dict[tuple[str, int | None, object], WorkerPool] = {}
_shared_lock = threading.Lock()


def shared_pool(
    workers: int | None = None, backend: BackendName | None = None, client: Any = None
) -> WorkerPool:
    """The pool behind :func:`conveyor.map`: created on first use, then reused.

    One per backend, size and cluster: ``conveyor.map(f, xs, backend="dask")`` starts a
    ``LocalCluster`` once and reuses it; ``client=`` picks a cluster of your own.

    Example::

        conveyor.shared_pool().statistics().tasks_done
    """
    name = _backends.choose(backend, "process")
    # A Client is keyed by identity (the pool holds it, so the id is not reused).
    where = client if client is None or isinstance(client, str) else id(client)
    key = (name, workers, where)
    with _shared_lock:
        pool = _shared.get(key)
        if pool is None or not pool._core.accepting:
            pool = _shared[key] = WorkerPool(workers, backend=name, client=client)  # type: ignore[arg-type]
        return pool


def shutdown_shared_pools() -> None:
    """Terminate the shared pools (tests, and programs that want their workers gone now)."""
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for pool in pools:
        pool.terminate()


def map(
    fn: Callable[..., T],
    items: Iterable[Any],
    *,
    workers: int | None = None,
    backend: BackendName | None = None,
    client: Any = None,
    star: bool = False,
    chunksize: int | None = None,
    timeout: float | None = None,
    retries: int = 1,
    progress: ProgressArg = False,
) -> list[T]:
    """Apply ``fn`` to every item in parallel and return the results in order.

    Runs on a shared pool (started once, reused by later calls). ``timeout`` is per task;
    ``retries`` re-runs a task whose worker crashed; ``progress=True`` shows a bar.

    Example::

        conveyor.map(lambda x: x ** 2, range(10))   # [0, 1, 4, ..., 81]
    """
    return shared_pool(workers, backend, client).map(
        fn,
        items,
        star=star,
        chunksize=chunksize,
        timeout=timeout,
        retries=retries,
        progress=progress,
    )


def imap(
    fn: Callable[..., T],
    items: Iterable[Any],
    *,
    workers: int | None = None,
    backend: BackendName | None = None,
    client: Any = None,
    ordered: bool = True,
    star: bool = False,
    chunksize: int | None = None,
    timeout: float | None = None,
    retries: int = 1,
    progress: ProgressArg = False,
) -> Iterator[T]:
    """Lazy :func:`map` over a shared pool: results as they come, input read on demand.

    Example::

        for line in conveyor.imap(str.upper, open("names.txt")):
            print(line, end="")
    """
    return shared_pool(workers, backend, client).imap(
        fn,
        items,
        ordered=ordered,
        star=star,
        chunksize=chunksize,
        timeout=timeout,
        retries=retries,
        progress=progress,
    )


def submit(
    fn: Callable[..., T],
    /,
    *args: Any,
    backend: BackendName | None = None,
    client: Any = None,
    **kwargs: Any,
) -> Future[T]:
    """Run one call on the shared pool; return a Future.

    ``backend`` and ``client`` choose the shared pool (as for :func:`map`), so they are
    not passed on to ``fn``: to call a function with arguments of those names, use
    ``conveyor.shared_pool().submit(fn, backend=...)``.

    Example::

        conveyor.submit(pow, 2, 100).result()
    """
    return shared_pool(None, backend, client).submit(fn, *args, **kwargs)
