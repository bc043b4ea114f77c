"""mpire.WorkerPool (start_method="threading" for the thread backend)."""

from __future__ import annotations

from mpire import WorkerPool

from .base import PROCESS, Session, Unsupported, chunk_kwargs


class MpireSession(Session):
    # mpire does not document apply_async as thread-safe, and with 16 threads calling it
    # at once (mpire 2.10) some results never arrived: the case hung until its timeout.
    concurrent_calls = False

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def map(self, fn, items, chunksize=None):
        # concatenate_numpy_output=False: return a list of arrays like every other engine.
        return self.pool.map(
            fn, items, concatenate_numpy_output=False, **chunk_kwargs("chunk_size", chunksize)
        )

    def call(self, fn, arg):
        return self.pool.apply_async(fn, args=(arg,)).get()

    def imap(self, fn, items):
        return self.pool.imap(fn, items)

    def close(self):
        self.pool.terminate()


def open_session(workers: int, backend: str = PROCESS, start_method: str | None = None) -> Session:
    if start_method is not None:
        raise Unsupported("start method choice is not compared for mpire")
    method = {} if backend == PROCESS else {"start_method": "threading"}
    # keep_alive=True: reuse the workers between map calls, as the other pools do; by
    # default mpire starts and stops its workers around every map.
    return MpireSession(WorkerPool(n_jobs=workers, keep_alive=True, **method))
