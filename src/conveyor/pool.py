"""Drop-in replacements for ``multiprocessing.Pool`` and ``multiprocessing.pool.ThreadPool``.

Same methods, arguments, results and error messages as the stdlib; change the import and
nothing else. What changes is underneath: a dead worker fails its own tasks instead of
hanging the pool, input to ``imap`` is read lazily, lambdas work, and a function travels
to each worker once.

Example::

    from conveyor import Pool

    with Pool(4) as pool:
        print(pool.map(abs, [-1, -2, 3]))       # [1, 2, 3]
"""

# The classes subclass the stdlib's so that isinstance checks accept them, but return
# conveyor's own result objects (same API, not the stdlib's classes): mypy's override
# check does not apply to that choice.
# mypy: disable-error-code="override"

from __future__ import annotations

import enum
import multiprocessing
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from multiprocessing import pool as mp_pool
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

from . import _backends
from ._engine._jobs import TaskOptions
from ._frontend._iterate import ResultIterator
from ._frontend._observable import Observable
from ._frontend._policy import MULTIPROCESSING
from ._frontend._pool_core import BackendName, PoolCore
from ._frontend._results import ApplyResult, AsyncResult, MapResult
from ._stats import WorkerStats

T = TypeVar("T")

__all__ = ["ApplyResult", "AsyncResult", "MapResult", "Pool", "ThreadPool"]


class _State(enum.Enum):
    RUN = "RUN"
    CLOSE = "CLOSE"
    TERMINATE = "TERMINATE"


class Pool(Observable, mp_pool.Pool):
    """A pool of worker processes with the ``multiprocessing.Pool`` API.

    A subclass of ``multiprocessing.pool.Pool``, so that code which checks for one (dask's
    ``pool=``, for instance) accepts it; every public method is conveyor's own and no
    stdlib machinery runs underneath.

    ``processes`` defaults to the CPUs this process may use (affinity and cgroup limits).
    Beyond the stdlib: ``worker_state`` (a factory called once per worker; tasks read it
    with :func:`conveyor.worker_state`), ``task_timeout`` (seconds per task), ``retries``
    (re-runs of a task whose worker crashed), ``max_worker_memory`` (bytes of RSS after
    which a worker is replaced), and :meth:`stats`.

    Example::

        with Pool(2) as pool:
            res = pool.apply_async(divmod, (7, 2))
            print(res.get(timeout=10))            # (3, 1)
            print(pool.map(lambda x: x * x, range(5)))
    """

    _backend: BackendName = "process"

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Sequence[Any] = (),
        maxtasksperchild: int | None = None,
        context: BaseContext | str | None = None,
        *,
        worker_state: Callable[[], Any] | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        max_worker_memory: int | None = None,
        backend: BackendName | None = None,
        client: Any = None,
    ) -> None:
        self._state = _State.RUN  # set first: __del__ and __repr__ read it
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        self._core = PoolCore(
            _backends.choose(backend, self._backend),
            processes,
            client=client,
            context=context,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_worker=maxtasksperchild,
            worker_state=worker_state,
            options=TaskOptions(timeout=task_timeout, retries=retries),
            max_worker_memory=max_worker_memory,
            policy=MULTIPROCESSING,
        )
        self._processes = self._core.size
        self._finalizer = weakref.finalize(self, PoolCore.abandon, self._core)

    # --- single calls ----------------------------------------------------------------------

    def apply(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
    ) -> T:
        """Call ``func(*args, **kwds)`` in a worker and wait for the result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callable[[T], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> ApplyResult[T]:
        """Start ``func(*args, **kwds)``; return an :class:`AsyncResult` at once."""
        self._check_running()
        result: ApplyResult[T] = ApplyResult(callback, error_callback)
        self._core.submit_call(func, tuple(args), dict(kwds or {}), result)
        return result

    # --- maps ------------------------------------------------------------------------------

    def map(
        self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int | None = None
    ) -> list[T]:
        """``list(map(func, iterable))``, in parallel. Chunk size adapts when not given."""
        return self._map_async(func, iterable, False, chunksize).get()

    def map_async(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[T]], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> MapResult[T]:
        return self._map_async(func, iterable, False, chunksize, callback, error_callback)

    def starmap(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
    ) -> list[T]:
        """Like :meth:`map`, calling ``func(*item)``."""
        return self._map_async(func, iterable, True, chunksize).get()

    def starmap_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[T]], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> MapResult[T]:
        return self._map_async(func, iterable, True, chunksize, callback, error_callback)

    def _map_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Any],
        star: bool,
        chunksize: int | None,
        callback: Callable[[list[T]], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> MapResult[T]:
        self._check_running()
        items: Sequence[Any] = (
            iterable if isinstance(iterable, (list, tuple, range)) else list(iterable)
        )
        result: MapResult[T] = MapResult(len(items), callback, error_callback)
        if star:
            items = [tuple(item) for item in items]
        self._core.submit_items(func, items, result, star=star, chunksize=chunksize)
        return result

    def imap(
        self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int | None = None
    ) -> ResultIterator[T]:
        """Lazy, ordered :meth:`map`: input is read only as fast as results are consumed."""
        return self._iterate(func, iterable, chunksize, ordered=True)

    def imap_unordered(
        self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int | None = None
    ) -> ResultIterator[T]:
        """Like :meth:`imap`, yielding results as they complete."""
        return self._iterate(func, iterable, chunksize, ordered=False)

    def _iterate(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None,
        *,
        ordered: bool,
    ) -> ResultIterator[T]:
        self._check_running()
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        return self._core.iterate(
            func,
            iterable,
            ordered=ordered,
            chunksize=chunksize,
            timeout_error=multiprocessing.TimeoutError,
            chunk_granular_input_errors=True,
        )

    # --- life cycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Accept no more work; workers exit when what was submitted is done."""
        if self._state is _State.RUN:
            self._state = _State.CLOSE
            self._core.close()

    def terminate(self) -> None:
        """Stop the workers now; unfinished tasks fail with ``TaskCancelledError``."""
        self._state = _State.TERMINATE
        self._core.terminate()
        self._finalizer.detach()

    def join(self) -> None:
        """Wait for the workers to exit; call :meth:`close` or :meth:`terminate` first."""
        if self._state is _State.RUN:
            raise ValueError("Pool is still running")
        self._core.join()
        self._finalizer.detach()

    @property
    def _pool(self) -> list[WorkerStats]:
        """The live workers, for code that reads the stdlib's private ``_pool``.

        dask's ``pool=`` takes ``len(pool._pool)`` as the number of workers; each entry
        here is a :class:`WorkerStats` snapshot (``.pid``), not a ``Process``.
        """
        return [w for w in self._core.statistics().workers if w.alive]

    def _check_running(self) -> None:
        self._core.check_accepting()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()  # the stdlib's semantics: leaving the block terminates the pool

    def __reduce__(self) -> Any:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        return (
            f"<{type(self).__module__}.{type(self).__qualname__} "
            f"state={self._state.value} pool_size={self._processes}>"
        )


class ThreadPool(Pool, mp_pool.ThreadPool):
    """The :class:`Pool` API over worker threads (``multiprocessing.pool.ThreadPool``).

    Nothing is pickled, so any callable and any argument works. ``task_timeout`` fails the
    task for the caller, but a thread cannot be stopped: it runs on in the background.

    Example::

        with ThreadPool(32) as pool:
            pages = pool.map(fetch, urls)
    """

    _backend: BackendName = "thread"

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Sequence[Any] = (),
        *,
        worker_state: Callable[[], Any] | None = None,
        task_timeout: float | None = None,
    ) -> None:
        super().__init__(
            processes,
            initializer,
            initargs,
            worker_state=worker_state,
            task_timeout=task_timeout,
        )
