"""Per-worker state: the object ``worker_state()`` hands to every task of one worker.

The pool's ``worker_state`` factory runs once per worker, on first use: a database
connection, a loaded model, a cache. A process worker has one; each thread worker its own;
a Dask worker process one per pool that uses it (the task's thread is pointed at its
pool's holder before each chunk, ``use_state``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_UNSET = object()


class StateHolder:
    """One worker's state: the factory, and what it built (on first use)."""

    __slots__ = ("_factory", "_lock", "_state")

    def __init__(self, factory: Callable[[], Any] | None) -> None:
        self._factory = factory
        self._state: Any = _UNSET
        # Several threads of one Dask worker may ask at once: the factory runs once.
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._state is _UNSET:
            with self._lock:
                if self._state is _UNSET:
                    self._state = self._factory() if self._factory is not None else None
        return self._state


_local = threading.local()
_process_holder: StateHolder | None = None


def install_state(factory: Callable[[], Any] | None, *, per_thread: bool) -> None:
    """Record the worker-state factory; the state is built on first use."""
    global _process_holder
    holder = StateHolder(factory)
    if per_thread:
        _local.holder = holder
    else:
        _process_holder = holder


def use_state(holder: StateHolder | None) -> None:
    """Tasks on the current thread get ``holder``'s state (a Dask worker, per chunk)."""
    _local.holder = holder


def worker_state() -> Any:
    """The state object of the worker running the current task.

    Built once per worker by the pool's ``worker_state`` factory, on first use, and handed
    to every task that asks for it on that worker: a database connection, a loaded model,
    a cache.

    Example::

        def lookup(key):
            db = conveyor.worker_state()        # one connection per worker
            return db.get(key)

        with conveyor.WorkerPool(4, worker_state=connect) as pool:
            pool.map(lookup, keys)
    """
    holder = getattr(_local, "holder", None) or _process_holder
    if holder is None:
        raise RuntimeError("conveyor.worker_state() is only available inside a pool's task")
    return holder.get()


class _SharedHolder:
    """The pool's shared object as this worker sees it: ``value()`` on first use."""

    def __init__(self, value: Callable[[], Any]) -> None:
        self.value = value


_process_shared: _SharedHolder | None = None


def install_shared(value: Callable[[], Any] | None, *, per_thread: bool) -> None:
    """Record how this worker gets its pool's shared object (None: the pool has none)."""
    global _process_shared
    holder = _SharedHolder(value) if value is not None else None
    if per_thread:
        _local.shared = holder
    else:
        _process_shared = holder


def shared() -> Any:
    """The object the pool was given with ``shared=``, in the worker running this task.

    It reaches each worker once (its big buffers through shared memory, once for the
    whole machine) and is unpickled there on first use; NumPy arrays in it are
    read-only. Under the thread backend it is the object itself.

    Example::

        def score(row):
            model = conveyor.shared()            # the same 200 MB model, in every worker
            return model.predict(row)

        with conveyor.WorkerPool(4, shared=model) as pool:
            pool.map(score, rows)
    """
    holder = getattr(_local, "shared", None) or _process_shared
    if holder is None:
        raise LookupError(
            "conveyor.shared() is only available in a task of a pool given shared=..."
        )
    return holder.value()
