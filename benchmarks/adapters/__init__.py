"""One adapter per engine: the only place that knows how to call loky, mpire, and so on.

Adapters are imported lazily, inside the case subprocess, so a peer that is missing or
broken is recorded as "unavailable" without stopping the suite.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .base import PROCESS, THREAD, Session, Unavailable, Unsupported

__all__ = [
    "BASELINE",
    "ENGINES",
    "PROCESS",
    "THREAD",
    "Engine",
    "Session",
    "Unavailable",
    "Unsupported",
]


@dataclass(frozen=True)
class Engine:
    key: str  # what --engines takes
    label: str  # what the table shows
    thread_label: str  # what the same column runs in the I/O-bound (thread) workload
    module: str
    opener: str = "open_session"
    is_conveyor: bool = False

    def open(
        self, workers: int, backend: str = PROCESS, start_method: str | None = None
    ) -> Session:
        try:
            adapter = importlib.import_module(f"{__name__}.{self.module}")
        except ImportError as error:
            raise Unavailable(f"cannot import: {error}") from error
        return getattr(adapter, self.opener)(workers, backend=backend, start_method=start_method)


ENGINES: dict[str, Engine] = {
    engine.key: engine
    for engine in [
        Engine("mp_pool", "multiprocessing.Pool", "multiprocessing.pool.ThreadPool", "mp_pool"),
        Engine("cf_process", "ProcessPoolExecutor", "ThreadPoolExecutor", "cf_executor"),
        Engine("loky", "loky", "loky (has no thread pool)", "loky_executor"),
        Engine("joblib", "joblib", "joblib threading", "joblib_parallel"),
        Engine("mpire", "mpire", "mpire threading", "mpire_pool"),
        Engine("pebble", "pebble", "pebble.ThreadPool", "pebble_pool"),
        Engine(
            "conveyor_pool",
            "conveyor.Pool",
            "conveyor.ThreadPool",
            "conveyor_stdlib",
            "open_pool_session",
            is_conveyor=True,
        ),
        Engine(
            "conveyor_executor",
            "conveyor.ProcessPoolExecutor",
            "conveyor.ThreadPoolExecutor",
            "conveyor_stdlib",
            "open_executor_session",
            is_conveyor=True,
        ),
        Engine(
            "conveyor_map",
            "conveyor.map",
            "conveyor.map (process only)",
            "conveyor_modern",
            "open_map_session",
            is_conveyor=True,
        ),
        Engine(
            "conveyor_workerpool",
            "conveyor.WorkerPool",
            'WorkerPool(backend="thread")',
            "conveyor_modern",
            "open_workerpool_session",
            is_conveyor=True,
        ),
    ]
}

BASELINE = "mp_pool"
