"""conveyor's modern API: the one-call conveyor.map and conveyor.WorkerPool."""

from __future__ import annotations

import conveyor

from .base import PROCESS, Session, Unavailable, Unsupported, chunk_kwargs


def _require(name: str) -> None:
    if not hasattr(conveyor, name):
        raise Unavailable(f"conveyor.{name} does not exist yet")


class OneCallSession(Session):
    """conveyor.map runs on a shared default pool that outlives any one call.

    conveyor.submit cannot choose the worker count, so round trips and start-up are n/a
    here: WorkerPool's session covers them.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def map(self, fn, items, chunksize=None):
        return list(
            conveyor.map(fn, items, workers=self.workers, **chunk_kwargs("chunksize", chunksize))
        )

    def imap(self, fn, items):
        return conveyor.imap(fn, items, workers=self.workers)

    def abandon(self, iterator):
        iterator.cancel()  # the shared pool lives on: only this iteration must stop


class WorkerPoolSession(Session):
    def __init__(self, pool) -> None:
        self.pool = pool

    def map(self, fn, items, chunksize=None):
        return list(self.pool.map(fn, items, **chunk_kwargs("chunksize", chunksize)))

    def call(self, fn, arg):
        return self.pool.submit(fn, arg).result()

    def imap(self, fn, items):
        return self.pool.imap(fn, items, ordered=True)

    def abandon(self, iterator):
        # Without this, leaving the pool's `with` block (close, then join) would read the
        # rest of the input: join means "finish everything submitted", as in the stdlib.
        iterator.cancel()

    def stats(self):
        return self.pool.stats()

    def close(self):
        self.pool.__exit__(None, None, None)  # what a user's `with WorkerPool(...)` does


def open_map_session(
    workers: int, backend: str = PROCESS, start_method: str | None = None
) -> Session:
    _require("map")
    if backend != PROCESS or start_method is not None:
        raise Unsupported("conveyor.map is compared on its default backend only")
    return OneCallSession(workers)


def open_workerpool_session(
    workers: int, backend: str = PROCESS, start_method: str | None = None
) -> Session:
    _require("WorkerPool")
    pool = conveyor.WorkerPool(workers, backend=backend, context=start_method)
    return WorkerPoolSession(pool.__enter__())
