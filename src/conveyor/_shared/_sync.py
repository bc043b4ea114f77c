"""Locks, semaphores, events, conditions and barriers, as the server keeps them.

Each is a small state machine run by the server's one thread: a call that can go on
does, one that must wait is parked (``_waits.py``) and answered by the release,
``set`` or notify that lets it go on, or by its deadline. The semantics are
``threading``'s, with one addition: whatever a process holds (a lock, an ``RLock``,
semaphore permits) is given back the moment it dies, and logged with its pid; an
``RLock`` is also given back when the thread that holds it ends (nobody else may
release it). A barrier party that dies while waiting breaks the barrier, so the
others do not wait forever for it.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .._transport._serialize import load_function
from ._waits import PARKED, Caller, Waiter, wait_timeout

_log = logging.getLogger("conveyor")


class SyncObject:
    """What the server asks of every primitive besides its own methods."""

    methods: frozenset[str] = frozenset()

    def process_died(self, pid: int) -> str:
        """Give back what ``pid`` held; says what, for the log ("" if nothing)."""
        return ""

    def connection_closed(self, conn: object) -> None:
        """A client thread's connection closed (its waits are withdrawn already)."""


def _granted(value: Any) -> Callable[[Waiter], None]:
    return lambda waiter: waiter.grant(value)


class Lock(SyncObject):
    """``threading.Lock``'s rules (``reentrant=False``) or ``threading.RLock``'s."""

    methods = frozenset({"acquire", "release", "locked", "_is_owned"})

    def __init__(self, reentrant: bool = False) -> None:
        self.reentrant = reentrant
        self.count = 0
        self.owner_conn: object = None
        self.owner_pid = 0
        # Releases a dead holder never made: given back at its death, the release another
        # process then makes for it (``multiprocessing``'s hand-off: acquire in a child,
        # release in the parent) is taken as that one, not as an error.
        self.owed = 0
        # Waiters to grant in turn; each ``saved`` is (count to hold, how to answer it).
        self.waiters: collections.deque[Waiter] = collections.deque()

    def acquire(self, caller: Caller, blocking: bool = True, timeout: Any = -1) -> Any:
        if self.count == 0:
            self.owed = 0  # a new holder: a late release would now be theirs
            self._give(caller.conn, caller.pid, 1)
            caller.on_undo(functools.partial(self.give_back, caller.conn))
            return True
        if self.reentrant and self.owner_conn is caller.conn:
            self.count += 1
            return True
        if not blocking:
            return False
        waiter = caller.park(wait_timeout(timeout), self._timed_out)
        waiter.saved = (1, _granted(True))
        self.waiters.append(waiter)
        return PARKED

    def release(self, caller: Caller) -> None:
        if self.count == 0 and self.owed and not self.reentrant:
            self.owed -= 1
            return
        if self.count == 0:
            raise RuntimeError(
                "cannot release un-acquired lock" if self.reentrant else "release unlocked lock"
            )
        if self.reentrant:
            if self.owner_conn is not caller.conn:
                raise RuntimeError("cannot release un-acquired lock")
            self.count -= 1
            if self.count:
                return
        self._hand_over()

    def locked(self, caller: Caller) -> bool:
        return self.count > 0

    def _is_owned(self, caller: Caller) -> bool:
        return self.owned_by(caller)

    def owned_by(self, caller: Caller) -> bool:
        """``threading.Condition``'s test: an RLock's owner, or a Lock that is held."""
        return self.owner_conn is caller.conn if self.reentrant else self.count > 0

    # --- for Condition ----------------------------------------------------------------

    def release_all(self, caller: Caller) -> int:
        """Release fully (a condition's wait); returns the count to restore."""
        count = self.count if self.reentrant else 1
        self._hand_over()
        return count

    def reacquire(self, waiter: Waiter, count: int, value: Any) -> None:
        """Take the lock back for ``waiter`` (waiting if need be), then answer ``value``."""
        waiter.on_timeout = None  # the wait is over; reacquiring has no deadline
        if self.count == 0:
            self._give(waiter.caller.conn, waiter.pid, count)
            waiter.grant(value)
        else:
            waiter.saved = (count, _granted(value))
            self.waiters.append(waiter)

    # --- giving and giving back -------------------------------------------------------

    def _give(self, conn: object, pid: int, count: int) -> None:
        self.count, self.owner_conn, self.owner_pid = count, conn, pid

    def _hand_over(self) -> None:
        self.count, self.owner_conn, self.owner_pid = 0, None, 0
        while self.waiters:
            waiter = self.waiters.popleft()
            if waiter.waiting:
                count, answer = waiter.saved
                self._give(waiter.caller.conn, waiter.pid, count)
                waiter.caller.on_undo(functools.partial(self.give_back, waiter.caller.conn))
                answer(waiter)
                return

    def _timed_out(self, waiter: Waiter) -> None:
        self.waiters.remove(waiter)
        waiter.grant(False)

    def give_back(self, conn: object) -> None:
        """Undo a grant its client never read (the wait was interrupted)."""
        if self.count and self.owner_conn is conn:
            self._hand_over()

    def process_died(self, pid: int) -> str:
        if self.count and self.owner_pid == pid:
            self._hand_over()
            if not self.count:
                self.owed += 1
            return "an RLock" if self.reentrant else "a Lock"
        return ""

    def connection_closed(self, conn: object) -> None:
        if self.reentrant and self.count and self.owner_conn is conn:
            self._hand_over()  # its owner thread is gone: nobody else may release it


class Semaphore(SyncObject):
    """``threading.Semaphore``'s rules (``bounded``: ``BoundedSemaphore``'s).

    A permit is held by the process that acquired it; a release by a process that
    holds none gives back one held by another (the semantics are unchanged: only the
    count matters), so that a death gives back exactly the permits still held.
    """

    methods = frozenset({"acquire", "release", "get_value", "statistics"})

    def __init__(self, value: int = 1, bounded: bool = False) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self.value = self.initial = value
        self.bounded = bounded
        self.held: collections.Counter[int] = collections.Counter()
        self.waiters: collections.deque[Waiter] = collections.deque()
        self.granted = 0
        self.waited_s = 0.0
        self.owed = 0  # permits given back at a death, whose release may still come

    def acquire(self, caller: Caller, blocking: bool = True, timeout: Any = None) -> Any:
        if self.value > 0:
            self.value -= 1
            self.held[caller.pid] += 1
            self.granted += 1
            caller.on_undo(functools.partial(self._give_one_back, caller.pid))
            return True
        if not blocking:
            return False
        waiter = caller.park(wait_timeout(timeout), self._timed_out)
        waiter.saved = time.monotonic()
        self.waiters.append(waiter)
        return PARKED

    def statistics(self, caller: Caller) -> dict[str, Any]:
        return {
            "total": self.initial,
            "available": self.value,
            "holders": sum(self.held.values()),
            "waiting": sum(1 for waiter in self.waiters if waiter.waiting),
            "granted": self.granted,
            "waited_s": self.waited_s,
        }

    def release(self, caller: Caller, n: int = 1) -> None:
        if n < 1:
            raise ValueError("n must be one or more")
        if not self.held[caller.pid] and self.owed:
            late = min(n, self.owed)  # releases for a dead holder, already made for it
            self.owed -= late
            n -= late
            if not n:
                return
        if self.bounded and self.value + n > self.initial:
            raise ValueError("Semaphore released too many times")
        for _ in range(n):
            self._give_one_back(caller.pid)

    def get_value(self, caller: Caller) -> int:
        return self.value

    def _give_one_back(self, pid: int) -> None:
        holder = pid if self.held[pid] > 0 else next((p for p, n in self.held.items() if n), 0)
        if holder:
            self.held[holder] -= 1
            if not self.held[holder]:
                del self.held[holder]
        while self.waiters:
            waiter = self.waiters.popleft()
            if waiter.waiting:
                self.held[waiter.pid] += 1
                self.granted += 1
                self.waited_s += time.monotonic() - waiter.saved
                waiter.caller.on_undo(functools.partial(self._give_one_back, waiter.pid))
                waiter.grant(True)
                return
        self.value += 1

    def _timed_out(self, waiter: Waiter) -> None:
        self.waiters.remove(waiter)
        self.waited_s += time.monotonic() - waiter.saved
        waiter.grant(False)

    def process_died(self, pid: int) -> str:
        permits = self.held.get(pid, 0)
        for _ in range(permits):
            self._give_one_back(pid)
        self.owed += permits
        return f"{permits} semaphore permit{'s' if permits > 1 else ''}" if permits else ""


class Event(SyncObject):
    """``threading.Event``'s rules."""

    methods = frozenset({"is_set", "set", "clear", "wait"})

    def __init__(self) -> None:
        self.flag = False
        self.waiters: list[Waiter] = []

    def is_set(self, caller: Caller) -> bool:
        return self.flag

    def set(self, caller: Caller) -> None:
        self.flag = True
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.grant(True)

    def clear(self, caller: Caller) -> None:
        self.flag = False

    def wait(self, caller: Caller, timeout: Any = None) -> Any:
        if self.flag:
            return True
        self.waiters.append(caller.park(wait_timeout(timeout), self._timed_out))
        return PARKED

    def _timed_out(self, waiter: Waiter) -> None:
        self.waiters.remove(waiter)
        waiter.grant(False)


class Condition(SyncObject):
    """``threading.Condition``'s rules, over a shared ``Lock`` or ``RLock`` (its own
    ``RLock`` by default). ``wait_for`` loops in the client, as in the stdlib's proxy."""

    methods = frozenset({"acquire", "release", "wait", "notify", "notify_all", "_is_owned"})

    def __init__(self, lock: Any = None) -> None:
        target = lock.target() if lock is not None else Lock(reentrant=True)
        if not isinstance(target, Lock):
            raise TypeError(f"a Condition needs a shared Lock or RLock, not {target!r}")
        self.lock: Lock = target
        self.waiters: collections.deque[Waiter] = collections.deque()

    def acquire(self, caller: Caller, blocking: bool = True, timeout: Any = -1) -> Any:
        return self.lock.acquire(caller, blocking, timeout)

    def release(self, caller: Caller) -> None:
        self.lock.release(caller)

    def _is_owned(self, caller: Caller) -> bool:
        return self.lock.owned_by(caller)

    def wait(self, caller: Caller, timeout: Any = None) -> Any:
        if not self.lock.owned_by(caller):
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = caller.park(wait_timeout(timeout), self._timed_out)
        waiter.saved = self.lock.release_all(caller)
        self.waiters.append(waiter)
        return PARKED

    def notify(self, caller: Caller, n: int = 1) -> None:
        if not self.lock.owned_by(caller):
            raise RuntimeError("cannot notify on un-acquired lock")
        while n > 0 and self.waiters:
            waiter = self.waiters.popleft()
            if waiter.waiting:
                self.lock.reacquire(waiter, waiter.saved, True)
                n -= 1

    def notify_all(self, caller: Caller) -> None:
        self.notify(caller, len(self.waiters))

    def _timed_out(self, waiter: Waiter) -> None:
        self.waiters.remove(waiter)
        self.lock.reacquire(waiter, waiter.saved, False)


class Barrier(SyncObject):
    """``threading.Barrier``'s rules; the action runs in the server when it trips."""

    methods = frozenset({"wait", "abort", "reset", "parties", "n_waiting", "broken"})

    def __init__(self, parties: int, action: bytes | None = None, timeout: Any = None) -> None:
        if parties < 1:
            raise ValueError("parties must be > 0")
        self._parties = parties
        self._action = load_function(action) if action is not None else None
        self._timeout = timeout
        self._waiting: list[Waiter] = []
        self._broken = False

    def wait(self, caller: Caller, timeout: Any = None) -> Any:
        if self._broken:
            raise threading.BrokenBarrierError
        index = len(self._waiting)
        if index + 1 < self._parties:
            limit = self._timeout if timeout is None else timeout
            self._waiting.append(caller.park(wait_timeout(limit), self._timed_out))
            return PARKED
        if self._action is not None:
            try:
                self._action()
            except BaseException:
                self._break()
                raise
        waiting, self._waiting = self._waiting, []
        for position, waiter in enumerate(waiting):
            waiter.grant(position)
        return index

    def abort(self, caller: Caller) -> None:
        self._break()

    def reset(self, caller: Caller) -> None:
        self._break()
        self._broken = False

    def parties(self, caller: Caller) -> int:
        return self._parties

    def n_waiting(self, caller: Caller) -> int:
        return sum(1 for waiter in self._waiting if waiter.waiting)

    def broken(self, caller: Caller) -> bool:
        return self._broken

    def _break(self) -> None:
        self._broken = True
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.fail(threading.BrokenBarrierError())

    def _timed_out(self, waiter: Waiter) -> None:
        self._break()

    def process_died(self, pid: int) -> str:
        if any(waiter.pid == pid for waiter in self._waiting):
            self._break()
            return "a place at a barrier (now broken)"
        return ""


def _rlock() -> Lock:
    return Lock(reentrant=True)


def _bounded_semaphore(value: int = 1) -> Semaphore:
    return Semaphore(value, bounded=True)


# typeid -> how to make one, and the methods a client may call.
SYNC_KINDS: dict[str, tuple[Callable[..., SyncObject], frozenset[str]]] = {
    "Lock": (Lock, Lock.methods),
    "RLock": (_rlock, Lock.methods),
    "Semaphore": (Semaphore, Semaphore.methods),
    "BoundedSemaphore": (_bounded_semaphore, Semaphore.methods),
    "Event": (Event, Event.methods),
    "Condition": (Condition, Condition.methods),
    "Barrier": (Barrier, Barrier.methods),
}


def log_release(pid: int, what: str, typeid: str, oid: int) -> None:
    _log.warning(
        "conveyor: process %d died holding %s (shared %s %d); given back", pid, what, typeid, oid
    )


__all__ = [
    "SYNC_KINDS",
    "Barrier",
    "Condition",
    "Event",
    "Lock",
    "Semaphore",
    "SyncObject",
    "log_release",
]
