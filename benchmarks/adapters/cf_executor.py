"""concurrent.futures.ProcessPoolExecutor (ThreadPoolExecutor for the thread backend)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing

from .base import PROCESS, Session, chunk_kwargs


class ExecutorSession(Session):
    """Also used for loky and conveyor's executors: they share the concurrent.futures API."""

    def __init__(self, executor: concurrent.futures.Executor) -> None:
        self.executor = executor

    def map(self, fn, items, chunksize=None):
        return list(self.executor.map(fn, items, **chunk_kwargs("chunksize", chunksize)))

    def call(self, fn, arg):
        return self.executor.submit(fn, arg).result()

    def imap(self, fn, items):
        # Executor.map is the only lazy-looking API: it submits the whole input first.
        return self.executor.map(fn, items)

    def close(self):
        self.executor.shutdown(wait=True, cancel_futures=True)


def open_session(workers: int, backend: str = PROCESS, start_method: str | None = None) -> Session:
    if backend != PROCESS:
        return ExecutorSession(concurrent.futures.ThreadPoolExecutor(workers))
    context = multiprocessing.get_context(start_method) if start_method else None
    return ExecutorSession(concurrent.futures.ProcessPoolExecutor(workers, mp_context=context))
