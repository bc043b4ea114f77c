"""multiprocessing.Pool (and multiprocessing.pool.ThreadPool for the thread backend)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool

from .base import PROCESS, Session, chunk_kwargs


class PoolSession(Session):
    def __init__(self, pool: multiprocessing.pool.Pool) -> None:
        self.pool = pool

    def map(self, fn, items, chunksize=None):
        return self.pool.map(fn, items, **chunk_kwargs("chunksize", chunksize))

    def call(self, fn, arg):
        return self.pool.apply_async(fn, (arg,)).get()

    def imap(self, fn, items):
        return self.pool.imap(fn, items)

    def close(self):
        # terminate() rather than close(): the lazy-input workload leaves work queued.
        self.pool.terminate()
        self.pool.join()


def open_session(workers: int, backend: str = PROCESS, start_method: str | None = None) -> Session:
    if backend != PROCESS:
        return PoolSession(multiprocessing.pool.ThreadPool(workers))
    context = multiprocessing.get_context(start_method)
    return PoolSession(context.Pool(workers))
