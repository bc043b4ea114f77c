"""joblib.Parallel with its default loky backend (the threading backend for threads)."""

from __future__ import annotations

from joblib import Parallel, delayed
from joblib.externals.loky import get_reusable_executor

from .base import PROCESS, Session, Unsupported


class JoblibSession(Session):
    # One managed Parallel serves every call, and it refuses a second call while one is
    # running ("This Parallel instance is already running"); a Parallel per thread would
    # no longer be the round-trip path the latency workload measures.
    concurrent_calls = False

    def __init__(self, workers: int, backend: str) -> None:
        self.workers = workers
        self.joblib_backend = "loky" if backend == PROCESS else "threading"
        # A managed Parallel keeps one backend alive across calls, as joblib advises for
        # many small calls; map() builds its own Parallel because batch_size is fixed at
        # construction. Both share loky's reusable worker processes.
        self.managed = Parallel(n_jobs=workers, backend=self.joblib_backend)
        self.managed.__enter__()

    def _parallel(self, **options) -> Parallel:
        return Parallel(n_jobs=self.workers, backend=self.joblib_backend, **options)

    def map(self, fn, items, chunksize=None):
        parallel = self._parallel(batch_size=chunksize or "auto")
        return parallel(delayed(fn)(item) for item in items)

    def call(self, fn, arg):
        return self.managed([delayed(fn)(arg)])[0]

    def imap(self, fn, items):
        # return_as="generator" dispatches lazily (pre_dispatch="2 * n_jobs").
        return self._parallel(return_as="generator")(delayed(fn)(item) for item in items)

    def close(self):
        self.managed.__exit__(None, None, None)
        if self.joblib_backend == "loky":
            # joblib leaves loky workers alive for reuse (idle timeout 300 s); shut them
            # down so "shut down" means the same for joblib as for every other engine.
            get_reusable_executor(max_workers=self.workers, reuse=True).shutdown(wait=True)


def open_session(workers: int, backend: str = PROCESS, start_method: str | None = None) -> Session:
    if start_method is not None:
        raise Unsupported("start method is not selectable")
    return JoblibSession(workers, backend)
