"""conveyor's drop-in APIs: conveyor.Pool / ThreadPool and the two executors.

They claim the stdlib's API, so they reuse the stdlib adapters' sessions unchanged: any
difference in the figures is the engine's, not the adapter's.
"""

from __future__ import annotations

import multiprocessing

import conveyor

from .base import PROCESS, Session, Unavailable, Unsupported
from .cf_executor import ExecutorSession
from .mp_pool import PoolSession


def _public(name: str):
    try:
        return getattr(conveyor, name)
    except AttributeError as error:
        raise Unavailable(f"conveyor.{name} does not exist yet") from error


def _construct(factory, *args, **kwargs):
    """Build the pool; a keyword the engine does not take means "cannot be compared"."""
    try:
        return factory(*args, **kwargs)
    except TypeError as error:
        raise Unsupported(f"{factory.__name__}: {error}") from error


def open_pool_session(
    workers: int, backend: str = PROCESS, start_method: str | None = None
) -> Session:
    if backend != PROCESS:
        return PoolSession(_public("ThreadPool")(workers))
    if start_method is None:
        return PoolSession(_public("Pool")(workers))
    context = multiprocessing.get_context(start_method)
    return PoolSession(_construct(_public("Pool"), workers, context=context))


def open_executor_session(
    workers: int, backend: str = PROCESS, start_method: str | None = None
) -> Session:
    if backend != PROCESS:
        return ExecutorSession(_public("ThreadPoolExecutor")(workers))
    if start_method is None:
        return ExecutorSession(_public("ProcessPoolExecutor")(workers))
    context = multiprocessing.get_context(start_method)
    return ExecutorSession(_construct(_public("ProcessPoolExecutor"), workers, mp_context=context))
