"""Requests the server answers later: a lock acquire that must wait, an event's wait.

The server has one thread, so nothing in it may block: a request that cannot go on
now becomes a ``Waiter``, and its reply is sent when a release, a ``set`` or a
notify grants it, or when its deadline passes (``Timers``). A waiter whose client
went away (its connection closed) is withdrawn, so nothing is ever granted to it.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

PARKED: Any = object()  # a method's result: "the reply comes later, from a Waiter"


class WaitState(enum.Enum):
    WAITING = "waiting"
    ANSWERED = "answered"  # granted, timed out or failed: its reply is sent
    WITHDRAWN = "withdrawn"  # its connection closed first: no reply


class Waiter:
    """One parked request: who asked, until when, and how to answer it."""

    __slots__ = ("caller", "deadline", "on_timeout", "saved", "state")

    def __init__(self, caller: Caller, deadline: float | None) -> None:
        self.caller = caller
        self.deadline = deadline
        self.on_timeout: Callable[[Waiter], None] | None = None
        self.saved: Any = None  # what the primitive keeps for it (an RLock's count)
        self.state = WaitState.WAITING

    @property
    def waiting(self) -> bool:
        return self.state is WaitState.WAITING

    @property
    def pid(self) -> int:
        return self.caller.pid

    def grant(self, value: Any) -> None:
        if self.waiting:
            self.state = WaitState.ANSWERED
            self.caller.answer(value)

    def fail(self, error: BaseException) -> None:
        if self.waiting:
            self.state = WaitState.ANSWERED
            self.caller.fail(error)

    def withdraw(self) -> None:
        if self.waiting:
            self.state = WaitState.WITHDRAWN


class Caller:
    """Who made the request being handled: its connection (a client thread) and pid."""

    __slots__ = ("_answer", "_fail", "_timers", "conn", "pid", "undo")

    def __init__(
        self,
        conn: object,
        pid: int,
        answer: Callable[[Any], None],
        fail: Callable[[BaseException], None],
        timers: Timers,
    ) -> None:
        self.conn = conn
        self.pid = pid
        self._answer = answer
        self._fail = fail
        self._timers = timers
        self.undo: Callable[[], None] | None = None

    def on_undo(self, undo: Callable[[], None]) -> None:
        """What gives back what this request was granted, should its client never read
        the reply (its wait was interrupted): ``Op.ABANDON``."""
        self.undo = undo

    def answer(self, value: Any) -> None:
        self._answer(value)

    def fail(self, error: BaseException) -> None:
        self._fail(error)

    def park(
        self, timeout: float | None, on_timeout: Callable[[Waiter], None] | None = None
    ) -> Waiter:
        """A waiter for this request; ``on_timeout`` runs if ``timeout`` passes first."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        waiter = Waiter(self, deadline)
        waiter.on_timeout = on_timeout
        self._timers.add(waiter)
        return waiter


def wait_timeout(timeout: Any) -> float | None:
    """A ``timeout`` argument as ``threading`` reads it: None or negative waits forever."""
    if timeout is None or timeout < 0:
        return None
    return float(timeout)


class Timers:
    """The deadlines of the waiters, soonest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Waiter]] = []
        self._order = itertools.count()
        self.by_conn: dict[object, list[Waiter]] = {}  # to withdraw a closed connection's

    def add(self, waiter: Waiter) -> None:
        self.by_conn.setdefault(waiter.caller.conn, []).append(waiter)
        if waiter.deadline is not None:
            heapq.heappush(self._heap, (waiter.deadline, next(self._order), waiter))

    def poll_timeout_s(self) -> float:
        """How long the loop may wait for the next event (-1: forever)."""
        while self._heap and not self._heap[0][2].waiting:
            heapq.heappop(self._heap)
        if not self._heap:
            return -1
        return max(0.0, self._heap[0][0] - time.monotonic())

    def expire(self) -> None:
        """Time out every waiter whose deadline has passed."""
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            _, _, waiter = heapq.heappop(self._heap)
            if waiter.waiting and waiter.on_timeout is not None:
                waiter.on_timeout(waiter)

    def waiting(self) -> int:
        """How many requests wait now."""
        return sum(1 for waiters in self.by_conn.values() for w in waiters if w.waiting)

    def withdraw_connection(self, conn: object) -> list[Waiter]:
        """Withdraw what a closed connection waits for; returns those waiters."""
        waiters = self.by_conn.pop(conn, [])
        for waiter in waiters:
            waiter.withdraw()
        return waiters

    def forget_answered(self, conn: object) -> None:
        waiters = self.by_conn.get(conn)
        if waiters:
            waiters[:] = [w for w in waiters if w.waiting]
            if not waiters:
                del self.by_conn[conn]


__all__ = ["PARKED", "Caller", "Timers", "WaitState", "Waiter", "wait_timeout"]
