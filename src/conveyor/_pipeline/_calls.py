"""What a stage's workers run for each item: the user's function, shaped by the stage.

These travel to process workers (pickled with the function inside), so they are small,
module-level and free of any reference to the parent's pipeline. A ``map`` stage needs
none: its workers run the user's function itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..errors import TaskTimeoutError, describe_call


class _StageCall:
    """Calls ``fn`` and shapes its result; named after ``fn`` in messages and events."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__module__ = getattr(fn, "__module__", None) or __name__
        self.__qualname__ = getattr(fn, "__qualname__", None) or repr(fn)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.fn,))


class FilterCall(_StageCall):
    """``bool(fn(item))``: the parent keeps the item, so only a flag travels back."""

    def __call__(self, item: Any) -> bool:
        return bool(self.fn(item))


class FlatMapCall(_StageCall):
    """``list(fn(item))``: a generator is run to its end in the worker, so a failure part
    way through yields none of its children (no partial output to retract)."""

    def __call__(self, item: Any) -> list[Any]:
        return list(self.fn(item))


class EachCall(_StageCall):
    """``fn(item)`` for its effect; nothing travels back."""

    def __call__(self, item: Any) -> None:
        self.fn(item)


async def await_within(
    fn: Callable[..., Any], item: Any, timeout: float | None, index: int | None
) -> Any:
    """``await fn(item)``; past ``timeout`` seconds the coroutine is cancelled and
    ``TaskTimeoutError`` raised (told apart from a ``TimeoutError`` of the item's own)."""
    if timeout is None:
        return await fn(item)
    task = asyncio.ensure_future(fn(item))
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    what = describe_call(fn, index)
    raise TaskTimeoutError(
        f"{what} ran longer than its timeout of {timeout} s; the coroutine was cancelled",
        task=what,
        timeout=timeout,
    )


__all__ = ["EachCall", "FilterCall", "FlatMapCall", "await_within"]
