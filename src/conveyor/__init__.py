"""conveyor: parallel work done right."""

from ._cpus import available_cpus
from ._execute import worker_state
from ._stats import PoolStats, WorkerStats
from .errors import (
    ConveyorError,
    PoolClosedError,
    RemoteTraceback,
    SerializationError,
    TaskCancelledError,
    TaskExitError,
    TaskTimeoutError,
    UnpicklableExceptionError,
    WorkerCrashedError,
    WorkerInitError,
)
from .pool import AsyncResult, Pool, ThreadPool

__all__ = [
    "AsyncResult",
    "ConveyorError",
    "Pool",
    "PoolClosedError",
    "PoolStats",
    "RemoteTraceback",
    "SerializationError",
    "TaskCancelledError",
    "TaskExitError",
    "TaskTimeoutError",
    "ThreadPool",
    "UnpicklableExceptionError",
    "WorkerCrashedError",
    "WorkerInitError",
    "WorkerStats",
    "available_cpus",
    "worker_state",
]
