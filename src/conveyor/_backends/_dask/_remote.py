"""What runs on a Dask worker: the pool's per-worker record and the chunk runner.

A pool registers one ``PoolPlugin`` with the cluster; Dask sets it up on every worker
that joins, now or later (a worker restarted after a crash included). The plugin only
records the pool; the initializer runs in the first chunk of the pool that reaches the
worker, in a task thread, so that a slow initializer never stalls the worker's event loop.

A chunk's answer is ``(kind, payload, compute_s, pid)``: the results pickled by the same
encoder as a process worker's (a result that cannot be pickled fails alone), or the
initializer's exception.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import OrderedDict
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..._run import CallMode, run_chunk
from ..._state import StateHolder, use_state
from ..._transport._results import ResultEncoder, unpickle_failure
from ..._transport._serialize import dumps, load_function, loads, pack_exception
from ._cluster import import_distributed

if TYPE_CHECKING:
    from distributed import WorkerPlugin
else:
    WorkerPlugin = import_distributed().WorkerPlugin  # an ImportError naming the extra

# How many distinct functions one pool keeps unpickled on one worker.
FUNCTIONS_KEPT = 64


class Answer(IntEnum):
    DONE = 0
    INIT_FAILED = 1


class PoolHere:
    """One pool, as seen by one Dask worker process."""

    def __init__(self, setup_blob: bytes) -> None:
        self._setup_blob = setup_blob
        self._lock = threading.Lock()
        self._initialized = False
        self.init_error: tuple[str, Any, str] | None = None
        self.state = StateHolder(None)
        self.encode: ResultEncoder | None = None
        self._functions: OrderedDict[bytes, Any] = OrderedDict()

    def initialize(self) -> None:
        """Run the pool's initializer here, once (the first chunk does it)."""
        if self._initialized:
            return
        with self._lock:
            if self._initialized:
                return
            initializer, initargs, factory, stdlib_results, result_error = loads(self._setup_blob)
            self.state = StateHolder(factory)
            self.encode = ResultEncoder(stdlib_results, result_error, shared_memory=False)
            if initializer is not None:
                try:
                    initializer(*initargs)
                except BaseException as exc:
                    self.init_error = pack_exception(exc)
            self._initialized = True

    def function(self, blob: bytes) -> Any:
        with self._lock:
            fn = self._functions.get(blob)
            if fn is not None:
                self._functions.move_to_end(blob)
                return fn
        fn = load_function(blob)
        with self._lock:
            self._functions[blob] = fn
            while len(self._functions) > FUNCTIONS_KEPT:
                self._functions.popitem(last=False)
        return fn


# token -> the pool on this worker; filled by PoolPlugin.setup, emptied by teardown.
POOLS: dict[str, PoolHere] = {}


class PoolPlugin(WorkerPlugin):
    """Registered once per pool; Dask runs ``setup`` on every worker, present or future."""

    def __init__(self, token: str, setup_blob: bytes) -> None:
        self.token = token
        self.setup_blob = setup_blob

    def setup(self, worker: Any) -> None:
        POOLS[self.token] = PoolHere(self.setup_blob)

    def teardown(self, worker: Any) -> None:
        POOLS.pop(self.token, None)


def pack_setup(
    initializer: Any, initargs: tuple[Any, ...], factory: Any, stdlib: bool, error: Any
) -> bytes:
    """What ``PoolHere.initialize`` unpacks (pickled by value: ``__main__`` code too)."""
    return cloudpickle.dumps((initializer, initargs, factory, stdlib, error), protocol=5)


def run_pool_chunk(
    token: str, fn_blob: bytes, mode: int, items_blob: bytes, buffers: list[bytes]
) -> tuple[int, Any, float, int]:
    """The task conveyor submits for one chunk (its results come back pickled)."""
    pool = POOLS.get(token)
    if pool is None:  # Dask runs plugins before tasks; this is a broken promise, say so
        raise RuntimeError(f"conveyor pool {token} is not set up on this Dask worker")
    pool.initialize()
    if pool.init_error is not None:
        return Answer.INIT_FAILED, pool.init_error, 0.0, os.getpid()
    assert pool.encode is not None
    fn = pool.function(fn_blob)
    try:
        items = loads(items_blob, buffers or None)
    except Exception as exc:
        return Answer.DONE, dumps(unpickle_failure(exc)), 0.0, os.getpid()
    use_state(pool.state)
    try:
        values, errors, compute_s = run_chunk(fn, CallMode(mode), items)
    finally:
        use_state(None)
    del items
    payload, _ = pool.encode(values, errors)
    return Answer.DONE, payload, compute_s, os.getpid()


async def kill_this_worker() -> None:
    """Run on a Dask worker (``Client.run``) to stop the task it runs: the worker process
    dies at once, as in a crash, and its nanny starts a fresh one. A coroutine, because
    ``Client.run(..., wait=False)`` takes only those (nobody could wait for the answer)."""
    os.kill(os.getpid(), signal.SIGKILL)


__all__ = [
    "POOLS",
    "Answer",
    "PoolHere",
    "PoolPlugin",
    "kill_this_worker",
    "pack_setup",
    "run_pool_chunk",
]
