"""Coroutines inside process (or thread, or Dask) workers: ``concurrency=N``.

An ``async def`` stage on ``backend="process"`` with ``concurrency=N`` sends its items
to the pool in *groups* of ``2 N``, one task each; the worker runs a group's coroutines
on an event loop of its own, at most N at once, and returns one outcome per item. So a
stage can use every core *and* keep many calls in flight on each.

``GroupedRunner`` is the parent's side: it looks like a runner of items to the stage and
like a stage to the pool's runner beneath it, translating groups back into items. An
item's exception travels back packed, with its traceback, as the pools' do; a group whose
worker died (after its retries) fails all of its items.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .._transport._serialize import pack_exception, unpack_exception
from ._calls import await_within
from ._report import StageEvent
from ._runners import EngineRunner, Outcomes
from ._spec import StageSpec

GROUP_PER_SLOT = 2  # a group holds this many coroutines per slot of concurrency


class AsyncGroupCall:
    """What a worker runs: one group's coroutines, at most ``concurrency`` at once."""

    def __init__(self, fn: Callable[..., Any], concurrency: int, timeout: float | None) -> None:
        self.fn = fn
        self.concurrency = concurrency
        self.timeout = timeout
        self.__module__ = getattr(fn, "__module__", None) or __name__
        self.__qualname__ = getattr(fn, "__qualname__", None) or repr(fn)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.fn, self.concurrency, self.timeout))

    def __call__(self, items: list[Any]) -> list[tuple[bool, Any]]:
        return _worker_loop().run_until_complete(self._run(items))

    async def _run(self, items: list[Any]) -> list[tuple[bool, Any]]:
        slots = asyncio.Semaphore(self.concurrency)
        return list(await asyncio.gather(*(self._one(slots, x) for x in items)))

    async def _one(self, slots: asyncio.Semaphore, item: Any) -> tuple[bool, Any]:
        async with slots:
            try:
                return True, await await_within(self.fn, item, self.timeout, None)
            except Exception as exc:
                return False, pack_exception(exc)


_loops = threading.local()


def _worker_loop() -> asyncio.AbstractEventLoop:
    """One event loop per worker thread, kept between groups."""
    loop: asyncio.AbstractEventLoop | None = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    return loop


class GroupedRunner:
    def __init__(
        self,
        spec: StageSpec,
        outcomes: Outcomes,
        subscriber: Callable[[StageEvent], object] | None = None,
    ) -> None:
        assert spec.concurrency is not None and spec.fn is not None
        self._outcomes = outcomes
        self._size = GROUP_PER_SLOT * spec.concurrency
        call = AsyncGroupCall(spec.fn, spec.concurrency, spec.timeout)
        # Timeouts are the coroutines' own, in the worker: a group has no deadline.
        pool_spec = dataclasses.replace(spec, timeout=None, chunksize=1)
        self._inner = EngineRunner(pool_spec, call, self, subscriber)
        self.workers = self._inner.workers
        self._groups: dict[int, tuple[int, int]] = {}  # group -> (first item, items)
        self._sent_groups = 0
        self._sent_items = 0

    def capacity(self) -> int:
        return self._inner.capacity() * self._size

    def max_capacity(self) -> int:
        return self._inner.max_capacity() * self._size

    def chunk_size(self) -> int:
        return self._size

    def send(self, items: list[Any]) -> None:
        size, groups = self._size, []
        for start in range(0, len(items), size):
            group = items[start : start + size]
            self._groups[self._sent_groups] = (self._sent_items, len(group))
            self._sent_groups += 1
            self._sent_items += len(group)
            groups.append(group)
        self._inner.send(groups)

    def end_input(self, total: int) -> None:
        self._inner.end_input(self._sent_groups)

    def stop(self) -> None:
        self._inner.stop()

    def finish(self, timeout: float) -> bool:
        return self._inner.finish(timeout)

    def busy_s(self) -> float:
        return self._inner.busy_s()

    def limiter_waits(self) -> int:
        return 0

    # --- the pool's outcomes, turned into the items' ---------------------------------------

    def on_finished(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        done: list[int] = []
        results: list[Any] = []
        for group, outcomes in zip(indices, values, strict=True):
            first, _ = self._groups.pop(group)
            for offset, (ok, value) in enumerate(outcomes):
                if ok:
                    done.append(first + offset)
                    results.append(value)
                else:
                    self._outcomes.on_failed(first + offset, unpack_exception(value))
        if done:
            self._outcomes.on_finished(done, results)

    def on_failed(self, index: int, exc: BaseException) -> None:
        first, count = self._groups.pop(index)
        for item in range(first, first + count):
            self._outcomes.on_failed(item, exc)

    def on_closed(self) -> None:
        self._outcomes.on_closed()

    def on_broken(self, exc: BaseException) -> None:
        self._outcomes.on_broken(exc)


__all__ = ["AsyncGroupCall", "GroupedRunner"]
