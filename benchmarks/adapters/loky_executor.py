"""loky's reusable executor (process backend only)."""

from __future__ import annotations

import loky

from .base import PROCESS, Session, only_process_backend
from .cf_executor import ExecutorSession


class LokySession(ExecutorSession):
    def close(self):
        # loky's shutdown() has no cancel_futures: killing the workers is its way to drop
        # queued work (the lazy-input workload leaves up to millions of futures queued),
        # as terminate() is multiprocessing.Pool's.
        self.executor.shutdown(wait=True, kill_workers=True)


def open_session(workers: int, backend: str = PROCESS, start_method: str | None = None) -> Session:
    only_process_backend(backend, start_method)
    # get_reusable_executor is loky's advertised entry point; close() shuts it down, so
    # the next session (e.g. the next start-up repeat) starts fresh workers.
    return LokySession(loky.get_reusable_executor(max_workers=workers))
