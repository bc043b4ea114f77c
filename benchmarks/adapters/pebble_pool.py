"""pebble.ProcessPool (pebble.ThreadPool for the thread backend)."""

from __future__ import annotations

import multiprocessing

import pebble

from .base import PROCESS, Session, chunk_kwargs


class PebbleSession(Session):
    def __init__(self, pool: pebble.ProcessPool | pebble.ThreadPool) -> None:
        self.pool = pool

    def map(self, fn, items, chunksize=None):
        return list(self.pool.map(fn, items, **chunk_kwargs("chunksize", chunksize)).result())

    def call(self, fn, arg):
        return self.pool.submit(fn, None, arg).result()  # None: no per-task timeout

    def imap(self, fn, items):
        return self.pool.map(fn, items).result()

    def close(self):
        # stop() cancels what is queued; close() would wait for every scheduled chunk.
        self.pool.stop()
        self.pool.join()


def open_session(workers: int, backend: str = PROCESS, start_method: str | None = None) -> Session:
    if backend != PROCESS:
        return PebbleSession(pebble.ThreadPool(max_workers=workers))
    if start_method is None:
        return PebbleSession(pebble.ProcessPool(max_workers=workers))
    context = multiprocessing.get_context(start_method)
    return PebbleSession(pebble.ProcessPool(max_workers=workers, context=context))
