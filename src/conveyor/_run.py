"""Running a chunk of calls inside a worker (a process or a thread).

This module holds no policy: it runs what it is given and reports what happened. It is
shared by the process worker loop (``_backends/_process/_child.py``) and the thread
backend, and its file name is how remote tracebacks skip its frames (``_serialize``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from enum import IntEnum
from itertools import starmap
from typing import Any

from .errors import TaskExitError


class CallMode(IntEnum):
    """How a chunk's items become calls."""

    SINGLE = 0  # fn(item): map, imap
    STAR = 1  # fn(*item): starmap
    CALL = 2  # fn(*args, **kwargs) with item == (args, kwargs): apply, submit


class _Failed:
    """Marks a position in a result list whose call raised; the exception is kept aside."""

    __slots__ = ()


FAILED = _Failed()


def _calls(fn: Callable[..., Any], mode: CallMode, items: Any) -> Any:
    if mode is CallMode.SINGLE:
        return map(fn, items)
    if mode is CallMode.STAR:
        return starmap(fn, items)
    return (fn(*args, **kwargs) for args, kwargs in items)


def run_chunk(
    fn: Callable[..., Any], mode: CallMode, items: Sequence[Any]
) -> tuple[list[Any], dict[int, BaseException], float]:
    """Run every call of a chunk; return (values, errors by position, seconds spent).

    ``values`` has one entry per item, ``FAILED`` where the call raised. The loop runs at C
    speed (``list.extend`` over ``map``), and because ``extend`` keeps what it appended
    before an exception, the position of a failing call is exact and the calls after it
    still run, each exactly once.
    """
    values: list[Any] = []
    errors: dict[int, BaseException] = {}
    remaining = iter(items)
    started = time.perf_counter()
    while True:
        try:
            values.extend(_calls(fn, mode, remaining))
            break
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is (
                threading.main_thread()
            ):
                raise
            errors[len(values)] = as_task_error(exc)
            values.append(FAILED)
    return values, errors, time.perf_counter() - started


def as_task_error(exc: BaseException) -> BaseException:
    """A task that calls sys.exit() must not end its worker: it becomes TaskExitError."""
    if isinstance(exc, SystemExit):
        error = TaskExitError(exc.code)
        error.__cause__ = exc
        error.__traceback__ = exc.__traceback__
        return error
    return exc
