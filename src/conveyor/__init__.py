"""conveyor: parallel work done right."""

from ._cpus import available_cpus
from ._engine._events import EventKind, JobEvent, TaskEvent, WorkerEvent
from ._engine._states import ExitCause
from ._frontend._subscription import Subscription
from ._pipeline._pipeline import Pipeline
from ._pipeline._report import Failure, PipelineReport, StageEvent, StageStats
from ._queues._channel import ReceiveChannel, SendChannel, channel
from ._queues._kinds import JoinableQueue, SimpleQueue
from ._queues._pipe import Connection, Pipe
from ._queues._queue import Queue
from ._queues._stats import QueueStats
from ._shared._limiters import CapacityLimiter, LimiterStats, RateLimiter
from ._shared._manager import Manager
from ._shared._proxies import ArrayProxy, DictProxy, ListProxy, NamespaceProxy, ValueProxy
from ._shared._stats import ManagerStats
from ._state import shared, worker_state
from ._stats import PoolStats, WorkerStats
from .errors import (
    AccessRefusedError,
    ChannelClosedError,
    ClusterLostError,
    ConveyorError,
    EndOfStream,
    ManagerGoneError,
    PipelineAccountingError,
    PipelineSpentError,
    PoolClosedError,
    QueueOwnerGoneError,
    QueueShutDown,
    ReceiversGoneError,
    RemoteTraceback,
    SerializationError,
    TaskCancelledError,
    TaskExitError,
    TaskTimeoutError,
    UnpicklableExceptionError,
    WorkerCrashedError,
    WorkerInitError,
)
from .executor import ProcessPoolExecutor, ThreadPoolExecutor
from .pool import AsyncResult, Pool, ThreadPool
from .workers import WorkerPool, imap, map, shared_pool, submit

__all__ = [
    "AccessRefusedError",
    "ArrayProxy",
    "AsyncResult",
    "CapacityLimiter",
    "ChannelClosedError",
    "ClusterLostError",
    "Connection",
    "ConveyorError",
    "DictProxy",
    "EndOfStream",
    "EventKind",
    "ExitCause",
    "Failure",
    "JobEvent",
    "JoinableQueue",
    "LimiterStats",
    "ListProxy",
    "Manager",
    "ManagerGoneError",
    "ManagerStats",
    "NamespaceProxy",
    "Pipe",
    "Pipeline",
    "PipelineAccountingError",
    "PipelineReport",
    "PipelineSpentError",
    "Pool",
    "PoolClosedError",
    "PoolStats",
    "ProcessPoolExecutor",
    "Queue",
    "QueueOwnerGoneError",
    "QueueShutDown",
    "QueueStats",
    "RateLimiter",
    "ReceiveChannel",
    "ReceiversGoneError",
    "RemoteTraceback",
    "SendChannel",
    "SerializationError",
    "SimpleQueue",
    "StageEvent",
    "StageStats",
    "Subscription",
    "TaskCancelledError",
    "TaskEvent",
    "TaskExitError",
    "TaskTimeoutError",
    "ThreadPool",
    "ThreadPoolExecutor",
    "UnpicklableExceptionError",
    "ValueProxy",
    "WorkerCrashedError",
    "WorkerEvent",
    "WorkerInitError",
    "WorkerPool",
    "WorkerStats",
    "available_cpus",
    "channel",
    "imap",
    "map",
    "shared",
    "shared_pool",
    "submit",
    "worker_state",
]
