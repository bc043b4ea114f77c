"""A rate limit, as the server keeps it: the generic cell rate algorithm (GCRA).

One number is the whole state: the theoretical arrival time (``tat``) of the next
call, kept by the server's clock for every client, which is why 20 processes sharing
a 7/s limit make 7 calls a second between them, not 7 each. A call conforms when
``tat - burst_window <= now``; it then moves ``tat`` one interval on. A call that must
wait reserves its slot at once and is answered when the slot comes, so waiters are
served in order; one whose wait would pass its timeout is refused at once and
reserves nothing.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ._sync import SyncObject
from ._waits import PARKED, Caller, Waiter, wait_timeout

_UNITS_S = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")


def parse_rate(rate: str) -> tuple[float, float]:
    """``"7/s"``, ``"100/min"``, ``"5/2s"``: (calls, per seconds)."""
    match = _RATE.match(rate.lower())
    if match is None or match.group(3) not in _UNITS_S:
        raise ValueError(
            f"cannot read the rate {rate!r}: write it as calls/period, such as '7/s', "
            "'100/min', '5/2s' or '1000/h'"
        )
    count = float(match.group(1))
    period_s = float(match.group(2) or 1) * _UNITS_S[match.group(3)]
    if count <= 0 or period_s <= 0:
        raise ValueError(f"the rate {rate!r} must allow some calls per period")
    return count, period_s


class RateLimit(SyncObject):
    """``count`` calls per ``period_s``, ``burst`` of them at once."""

    methods = frozenset({"acquire", "statistics"})

    def __init__(self, count: float, period_s: float, burst: int) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.interval_s = period_s / count
        self.window_s = (burst - 1) * self.interval_s
        self.tat = time.monotonic()
        self.granted = 0
        self.refused = 0
        self.waited_s = 0.0
        self._waiters: list[Waiter] = []

    def acquire(self, caller: Caller, blocking: bool = True, timeout: Any = None) -> Any:
        now = time.monotonic()
        start = max(self.tat, now)
        wait_s = start - self.window_s - now
        if wait_s <= 0:
            self.tat = start + self.interval_s
            self.granted += 1
            return True
        limit = wait_timeout(timeout)
        if not blocking or (limit is not None and wait_s > limit):
            self.refused += 1
            return False
        self.tat = start + self.interval_s  # its slot, reserved now: waiters go in order
        waiter = caller.park(wait_s, self._due)
        waiter.saved = now
        self._waiters = [w for w in self._waiters if w.waiting]
        self._waiters.append(waiter)
        return PARKED

    def _due(self, waiter: Waiter) -> None:
        self.granted += 1
        self.waited_s += time.monotonic() - waiter.saved
        waiter.grant(True)

    def statistics(self, caller: Caller) -> dict[str, Any]:
        return {
            "granted": self.granted,
            "refused": self.refused,
            "waiting": sum(1 for waiter in self._waiters if waiter.waiting),
            "waited_s": self.waited_s,
        }


__all__ = ["RateLimit", "parse_rate"]
