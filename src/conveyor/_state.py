"""Per-worker state: the object ``worker_state()`` hands to every task of one worker.

The pool's ``worker_state`` factory runs once per worker, on first use: a database
connection, a loaded model, a cache. A process worker has one; each thread worker its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_local = threading.local()
_process_state: dict[str, Any] = {}
_UNSET = object()


def install_state(factory: Callable[[], Any] | None, *, per_thread: bool) -> None:
    """Record the worker-state factory; the state is built on first use."""
    holder = _local.__dict__ if per_thread else _process_state
    holder["factory"] = factory
    holder["state"] = _UNSET


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
    holder = _local.__dict__ if "factory" in _local.__dict__ else _process_state
    if "factory" not in holder:
        raise RuntimeError("conveyor.worker_state() is only available inside a pool's task")
    if holder["state"] is _UNSET:
        factory = holder["factory"]
        holder["state"] = factory() if factory is not None else None
    return holder["state"]
