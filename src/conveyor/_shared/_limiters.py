"""``CapacityLimiter`` and ``RateLimiter``: limits every process shares, not one each.

A limiter is a handle on an object in a manager's server (the process's default
manager, started on first use, unless one is given), so a limiter passed to 20 worker
processes is one limit for the 20 of them: the classic bug of a rate limiter copied
into each worker, which multiplies the rate by the number of workers, cannot happen.
Permits of a process that dies are given back at once (``_sync.Semaphore``).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import threading
from typing import Any

from ._manager import Manager
from ._proxies import BaseProxy, new_proxy
from ._rates import parse_rate


@dataclasses.dataclass(frozen=True)
class LimiterStats:
    """A snapshot of a limiter, over every process that uses it.

    ``holders``: permits held now (capacity limiters); ``waiting``: calls waiting now;
    ``granted``: acquisitions so far; ``refused``: non-blocking or timed-out
    acquisitions that got nothing (rate limiters); ``waited_s``: time spent waiting, in
    total.
    """

    granted: int
    waiting: int
    waited_s: float
    holders: int = 0
    available: int = 0
    total: int = 0
    refused: int = 0


class _Limiter:
    """What both limiters share: ``with``, ``acquire``, ``release``, pickling, stats."""

    _proxy: BaseProxy

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a permit, waiting for one unless ``blocking`` is false (at most
        ``timeout`` seconds); True if taken."""
        return bool(self._proxy._callmethod("acquire", (blocking, timeout)))

    def __enter__(self) -> _Limiter:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        raise NotImplementedError

    def statistics(self) -> LimiterStats:
        return LimiterStats(**self._proxy._callmethod("statistics"))

    def __reduce__(self) -> Any:
        return _rebuild, (type(self), self.__dict__)


def _rebuild(cls: type[_Limiter], state: dict[str, Any]) -> _Limiter:
    limiter = cls.__new__(cls)
    limiter.__dict__.update(state)
    return limiter


class CapacityLimiter(_Limiter):
    """At most ``total_tokens`` holders at once, across every process that has it.

    Example::

        limiter = conveyor.CapacityLimiter(4)      # 4 calls to the service at a time
        def fetch(url):
            with limiter:
                return download(url)
        conveyor.map(fetch, urls, workers=32)
    """

    def __init__(self, total_tokens: int, *, manager: Manager | None = None) -> None:
        if not isinstance(total_tokens, int) or total_tokens < 1:
            raise ValueError(f"total_tokens must be a positive int, not {total_tokens!r}")
        client = (manager or default_manager())._started()
        self._proxy = new_proxy(client, "CapacityLimit", (total_tokens,), {})
        self.total_tokens = total_tokens

    def release(self) -> None:
        """Give back a permit."""
        self._proxy._callmethod("release")

    @property
    def available_tokens(self) -> int:
        return int(self._proxy._callmethod("get_value"))

    def __repr__(self) -> str:
        return f"<conveyor.CapacityLimiter {self.total_tokens}>"


class RateLimiter(_Limiter):
    """At most ``rate`` calls (``"7/s"``, ``"100/min"``, ``"5/2s"``) across every
    process that has it, ``burst`` of them at once (by default the rate's count, as in
    aiolimiter). ``release()`` does nothing: a call spends its permit.

    Example::

        limiter = conveyor.RateLimiter("7/s")
        def call_api(item):
            with limiter:                           # 7 a second, from all workers together
                return api.get(item)
    """

    def __init__(self, rate: str, burst: int | None = None, *, manager: Manager | None = None):
        count, period_s = parse_rate(rate)
        self.rate = rate
        self.burst = burst if burst is not None else max(1, int(count))
        client = (manager or default_manager())._started()
        self._proxy = new_proxy(client, "RateLimit", (count, period_s, self.burst), {})

    def release(self) -> None:
        """Nothing to give back: a call spends its permit."""

    def __repr__(self) -> str:
        return f"<conveyor.RateLimiter {self.rate} burst={self.burst}>"


class _Default:
    manager: Manager | None = None
    lock = threading.Lock()


def default_manager() -> Manager:
    """The manager limiters use when given none: started on first use, by this process
    (or inherited from the parent that started it), shut down when its owner exits."""
    with _Default.lock:
        if _Default.manager is None:
            _Default.manager = Manager()
            atexit.register(_shut_down_default, os.getpid())
        return _Default.manager


def _shut_down_default(owner_pid: int) -> None:
    if os.getpid() == owner_pid:
        shutdown_default_manager()


def shutdown_default_manager() -> None:
    """Shut the default manager down now (its limiters stop working); the next
    limiter made without a manager starts a new one."""
    with _Default.lock:
        manager, _Default.manager = _Default.manager, None
    if manager is not None:
        manager.shutdown()


__all__ = [
    "CapacityLimiter",
    "LimiterStats",
    "RateLimiter",
    "default_manager",
    "shutdown_default_manager",
]
