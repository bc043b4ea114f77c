"""Where a stage's function runs: a conveyor pool's engine, or an event loop.

A runner is handed items in order (``send``), numbers them from 0 in that order, and
reports each one's outcome to the stage (``Outcomes``) from its own thread: ``on_finished``
with the values, ``on_failed`` with the exception, then ``on_closed`` once the input has ended
(``end_input``) and every item has an outcome. ``stop`` ends it now (what is running is
abandoned, and counted cancelled by the stage); ``finish`` lets it end once idle.

- ``EngineRunner`` (``process``, ``thread``, ``dask``): one pool per stage with one
  streaming job, so a stage has the pools' supervision as it is: a crashed worker's item
  is retried (``retries``) or fails with ``WorkerCrashedError``, an overdue one fails with
  ``TaskTimeoutError`` and its worker is replaced, a limiter is obeyed at dispatch.
- ``AsyncRunner`` (``async``): coroutines on an event loop of the stage's own thread, at
  most ``workers`` at once; a timeout cancels the coroutine.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .._engine._chunking import MAX_LAZY_CHUNK
from .._engine._jobs import TaskOptions
from .._frontend._policy import CONVEYOR
from .._frontend._pool_core import PoolCore
from .._shared._limiters import CapacityLimiter
from ._calls import await_within
from ._report import StageEvent
from ._spec import StageSpec

# In flight in an engine stage: this many chunks per worker (one running, one held, the
# results of one on their way back, one being cut), and never fewer than a few items.
CHUNKS_IN_FLIGHT_PER_WORKER = 4
MIN_IN_FLIGHT = 8
# Coroutines in flight in an async stage when ``workers`` is not given.
DEFAULT_ASYNC_CONCURRENCY = 32
_POLL_S = 0.25  # how often a blocked limiter acquire looks whether the stage stopped


class Outcomes(Protocol):
    def on_finished(self, indices: Sequence[int], values: Sequence[Any]) -> None: ...

    def on_failed(self, index: int, exc: BaseException) -> None: ...

    def on_closed(self) -> None: ...

    def on_broken(self, exc: BaseException) -> None:
        """The runner cannot go on (its pool broke): every item without an outcome is lost."""


class Runner(Protocol):
    workers: int

    def capacity(self) -> int: ...

    def chunk_size(self) -> int:
        """How many items it sends a worker at once (what is worth waiting to gather)."""

    def max_capacity(self) -> int: ...

    def send(self, items: list[Any]) -> None: ...

    def end_input(self, total: int) -> None: ...

    def stop(self) -> None: ...

    def finish(self, timeout: float) -> bool: ...

    def busy_s(self) -> float: ...

    def limiter_waits(self) -> int: ...


class _EngineSink:
    """The stage's job sink: outcomes straight to the stage (outside the engine lock)."""

    def __init__(self, outcomes: Outcomes) -> None:
        self._outcomes = outcomes

    def deliver(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        self._outcomes.on_finished(indices, values)

    def fail(self, index: int, exc: BaseException) -> None:
        self._outcomes.on_failed(index, exc)

    def input_failed(self, index: int, exc: BaseException) -> None:
        self._outcomes.on_broken(exc)  # never: the stage ends its input without an error

    def close(self, total: int) -> None:
        self._outcomes.on_closed()

    def abort(self, exc: BaseException) -> None:
        self._outcomes.on_broken(exc)

    def claim(self) -> bool:
        return True


class EngineRunner:
    """A stage on a pool of its own: ``process``, ``thread`` or ``dask`` workers."""

    def __init__(
        self,
        spec: StageSpec,
        fn: Callable[..., Any],
        outcomes: Outcomes,
        subscriber: Callable[[StageEvent], object] | None = None,
    ) -> None:
        self._core = PoolCore(
            spec.backend,
            spec.workers,
            client=spec.client,
            options=TaskOptions(timeout=spec.timeout, retries=spec.retries),
            limiter=spec.limiter,
            thread_name_prefix=f"conveyor-stage-{spec.name}",
            policy=CONVEYOR,
        )
        self.workers = self._core.size
        self._fixed = spec.chunksize
        if subscriber is not None:  # before the job, so that its first event is seen
            name = spec.name
            self._core.subscribe(lambda event: subscriber(StageEvent(name, event)))
        try:
            self._job = self._core.stream(fn, _EngineSink(outcomes), chunksize=spec.chunksize)
        except BaseException:
            self._core.terminate()
            raise

    def capacity(self) -> int:
        chunk = self._job.sizer.size(None)
        return max(MIN_IN_FLIGHT, CHUNKS_IN_FLIGHT_PER_WORKER * self.workers * chunk)

    def chunk_size(self) -> int:
        return self._job.sizer.size(None)

    def max_capacity(self) -> int:
        chunk = self._fixed or MAX_LAZY_CHUNK
        return max(MIN_IN_FLIGHT, CHUNKS_IN_FLIGHT_PER_WORKER * self.workers * chunk)

    def send(self, items: list[Any]) -> None:
        self._core.engine.push(self._job, items)

    def end_input(self, total: int) -> None:
        self._core.engine.end_input(self._job, total)

    def stop(self) -> None:
        self._core.terminate()

    def finish(self, timeout: float) -> bool:
        self._core.close()
        return self._core.join(timeout)

    def busy_s(self) -> float:
        return sum(w.busy_s for w in self._core.statistics().workers)

    def limiter_waits(self) -> int:
        return self._core.limiter_refusals


class AsyncRunner:
    """A stage of coroutines: an event loop on a thread of its own, ``workers`` at once."""

    def __init__(self, spec: StageSpec, outcomes: Outcomes) -> None:
        self._fn = spec.fn
        self._timeout = spec.timeout
        self._limiter = spec.limiter
        self._outcomes = outcomes
        self.workers = spec.workers or DEFAULT_ASYNC_CONCURRENCY
        self._loop = asyncio.new_event_loop()
        self._slots: asyncio.Semaphore | None = None
        self._permits: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent = 0
        self._settled = 0
        self._total: int | None = None
        self._stopping = False
        self._busy_s = 0.0
        self._waits = 0
        self._thread = threading.Thread(
            target=self._run_loop, name=f"conveyor-stage-{spec.name}", daemon=True
        )
        self._thread.start()

    # --- the stage's side (any thread) --------------------------------------------------

    def capacity(self) -> int:
        return 2 * self.workers  # those running, and as many ready to start

    def chunk_size(self) -> int:
        return 1

    def max_capacity(self) -> int:
        return self.capacity()

    def send(self, items: list[Any]) -> None:
        first, self._sent = self._sent, self._sent + len(items)
        self._loop.call_soon_threadsafe(self._start, first, items)

    def end_input(self, total: int) -> None:
        self._loop.call_soon_threadsafe(self._set_total, total)

    def stop(self) -> None:
        self._stopping = True
        self._call_if_open(self._cancel_all)
        self._thread.join(10.0)

    def finish(self, timeout: float) -> bool:
        self._call_if_open(self._loop.stop)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def busy_s(self) -> float:
        return self._busy_s

    def limiter_waits(self) -> int:
        return self._waits

    def _call_if_open(self, fn: Callable[[], Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop already closed
            pass

    # --- the loop's side ------------------------------------------------------------------

    def _run_loop(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        self._slots = asyncio.Semaphore(self.workers)
        self._permits = asyncio.Lock()
        try:
            loop.run_forever()
            pending = [t for t in self._tasks if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def _start(self, first: int, items: list[Any]) -> None:
        for offset, item in enumerate(items):
            task = self._loop.create_task(self._one(first + offset, item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _set_total(self, total: int) -> None:
        self._total = total
        self._close_if_done()

    def _cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._loop.stop()

    def _close_if_done(self) -> None:
        if self._total is not None and self._settled == self._total and not self._stopping:
            self._outcomes.on_closed()

    async def _one(self, index: int, item: Any) -> None:
        assert self._slots is not None
        async with self._slots:
            if self._limiter is not None:
                await self._take_permit()
            started = time.perf_counter()
            try:
                assert self._fn is not None
                value = await await_within(self._fn, item, self._timeout, index)
            except asyncio.CancelledError:
                raise  # the stage is stopping: the stage counts the item cancelled
            except BaseException as exc:
                self._settled += 1
                self._outcomes.on_failed(index, exc)
                self._close_if_done()
                return
            finally:
                self._busy_s += time.perf_counter() - started
                if isinstance(self._limiter, CapacityLimiter):
                    await self._loop.run_in_executor(None, self._limiter.release)
            self._settled += 1
            self._outcomes.on_finished((index,), (value,))
            self._close_if_done()

    async def _take_permit(self) -> None:
        """One coroutine at a time waits on the limiter, in the loop's executor, so a
        slow limit holds one thread, not one per coroutine."""
        assert self._permits is not None and self._limiter is not None
        limiter = self._limiter
        async with self._permits:
            while not await self._loop.run_in_executor(None, limiter.acquire, True, _POLL_S):
                self._waits += 1
                if self._stopping:
                    raise asyncio.CancelledError


__all__ = ["AsyncRunner", "EngineRunner", "Outcomes", "Runner"]
