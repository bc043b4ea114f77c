"""A pool's ``limiter=``: tasks are sent to workers only as the limiter allows.

The engine asks its ``Admission`` how many of a job's tasks may go, under its lock, so
the answer must be instant: permits are taken ahead, by a thread of the pool
(``conveyor-limiter``), one each time a job was held back, and handed out from there.
A ``CapacityLimiter`` permit is held from the moment a task is sent until its outcome
is delivered (a task retried after a crash keeps its permit), then given back by the
thread that delivers the outcome; a ``RateLimiter`` permit is spent. A permit taken
ahead that no task wants within ``IDLE_RETURN_S`` goes back, so a pool with nothing to
send holds none.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from .._engine._engine import Engine
from .._engine._jobs import Job, Sink
from .._shared._limiters import CapacityLimiter, RateLimiter
from ._sinks import SinkWrapper

_log = logging.getLogger("conveyor")
IDLE_RETURN_S = 0.05
_POLL_S = 0.5  # how often a blocked acquire looks whether the pool is closing


class LimiterAdmission:
    """Admission of the jobs that share one limiter, in one pool."""

    def __init__(
        self, limiter: CapacityLimiter | RateLimiter, engine: Engine, *, one_job: bool = False
    ) -> None:
        if not isinstance(limiter, (CapacityLimiter, RateLimiter)):
            raise TypeError(
                f"limiter must be a conveyor.CapacityLimiter or RateLimiter, not {limiter!r}"
            )
        self._limiter = limiter
        self._returns = isinstance(limiter, CapacityLimiter)  # a rate permit is spent
        self._engine = engine
        self._cond = threading.Condition()
        self._in_hand = 0
        self._wanted = 0
        # What the last take gave from the permits in hand (take and bound come in pairs,
        # under the engine lock): what its chunk did not use goes back.
        self._from_hand = 0
        self._held: dict[int, set[int]] = {}  # job -> its tasks holding a permit
        self._closing = False
        self._broken = False  # the limiter failed: tasks go unlimited (logged)
        self.one_job = one_job  # a call's own limiter: it ends with its job
        self.refusals = 0  # times a task had to wait for a permit (statistics)
        self._thread = threading.Thread(target=self._pump, name="conveyor-limiter", daemon=True)
        self._thread.start()

    # --- the engine's side (under its lock: never waits) -------------------------------

    def take(self, job: Job, wanted: int) -> int:
        if job.retry_next:
            self._from_hand = 0  # its tasks hold their permits still: none is needed
            return wanted
        with self._cond:
            granted = min(wanted, self._in_hand)
            self._in_hand -= granted
            self._from_hand = granted
            if granted:
                self._cond.notify_all()  # the thread may be waiting to see it taken
            if granted < wanted:
                self.refusals += 1
            if granted < wanted and self._wanted == 0:
                self._wanted = 1  # one at a time: each permit taken goes out at once
                self._cond.notify()
            return granted

    def bound(self, job: Job, indices: Sequence[int], granted: int) -> None:
        with self._cond:
            held = self._held.setdefault(job.id, set())
            new = [index for index in indices if index not in held]
            held.update(new)
            self._in_hand += max(0, self._from_hand - len(new))  # what the chunk left

    # --- outcomes (outside the engine lock) --------------------------------------------

    def settled(self, job_id: int, indices: Sequence[int]) -> None:
        with self._cond:
            held = self._held.get(job_id)
            if not held:
                return
            before = len(held)
            held.difference_update(indices)
            permits = before - len(held)
        self._give_back(permits)

    def job_ended(self, job_id: int) -> None:
        with self._cond:
            permits = len(self._held.pop(job_id, ()))
        self._give_back(permits)

    def _give_back(self, permits: int) -> None:
        # On the thread that delivers the outcomes, at once: the limiter's own thread may
        # be waiting for exactly these permits.
        if not self._returns or self._broken:
            return
        try:
            for _ in range(permits):
                self._limiter.release()
        except Exception as exc:  # its manager is gone: outcomes must still be delivered
            self._limiter_failed(exc)

    def _limiter_failed(self, exc: BaseException) -> None:
        """The limiter can no longer be asked (its manager died or was shut down): say so
        once, loudly, and let the tasks go, rather than hold the pool's work forever."""
        with self._cond:
            if self._broken:
                return
            self._broken = True
            self._in_hand = 1 << 62  # every take is granted from now on
        _log.error(
            "conveyor: the pool's limiter %r failed (%s); its tasks are no longer limited",
            self._limiter,
            exc,
        )
        self._engine.wake_dispatch()

    # --- the thread --------------------------------------------------------------------

    def _pump(self) -> None:
        while True:
            with self._cond:
                while not (self._wanted or self._closing or self._broken):
                    self._cond.wait()
                if self._closing or self._broken:
                    break
            if self._acquire_one():
                self._engine.wake_dispatch()
                self._return_if_unwanted()
        self._give_back_everything()

    def _acquire_one(self) -> bool:
        while not self._closing and not self._broken:
            try:
                granted = self._limiter.acquire(timeout=_POLL_S)
            except Exception as exc:
                self._limiter_failed(exc)
                return False
            if granted:
                with self._cond:
                    self._in_hand += 1
                    self._wanted = 0
                return True
        return False

    def _return_if_unwanted(self) -> None:
        """A permit nobody took (the job it was for ended meanwhile) goes back."""
        with self._cond:
            self._cond.wait_for(lambda: not self._in_hand or self._closing, IDLE_RETURN_S)
            spare = self._in_hand if self._returns and not self._wanted else 0
            self._in_hand -= spare
        try:
            for _ in range(spare):
                self._limiter.release()
        except Exception as exc:
            self._limiter_failed(exc)

    def _give_back_everything(self) -> None:
        if self._broken:
            return
        with self._cond:
            held = sum(len(tasks) for tasks in self._held.values())
            permits = (self._in_hand + held) if self._returns else 0
            self._in_hand = 0
            self._held.clear()
        try:
            for _ in range(permits):
                self._limiter.release()
        except Exception as exc:  # its manager went first: nothing left to give back to
            _log.debug("conveyor: could not give back %d permits: %s", permits, exc)

    def close(self, wait: bool = True) -> None:
        """The pool (or the call) ended: stop taking permits and give back what is held,
        on the limiter's thread, which ends within ``_POLL_S``."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if wait and self._thread is not threading.current_thread():
            self._thread.join(_POLL_S * 4)


class ReleasingSink(SinkWrapper):
    """A job's sink that tells its admission which tasks have their outcome."""

    def __init__(self, sink: Sink, admission: LimiterAdmission, job_id: int) -> None:
        super().__init__(sink)
        self._admission = admission
        self.job_id = job_id

    def deliver(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        self._admission.settled(self.job_id, indices)
        self.sink.deliver(indices, values)

    def fail(self, index: int, exc: BaseException) -> None:
        self._admission.settled(self.job_id, (index,))
        self.sink.fail(index, exc)

    def close(self, total: int) -> None:
        self._end()
        self.sink.close(total)

    def abort(self, exc: BaseException) -> None:
        self._end()
        self.sink.abort(exc)

    def _end(self) -> None:
        self._admission.job_ended(self.job_id)
        if self._admission.one_job:
            self._admission.close(wait=False)  # on the thread delivering outcomes: no wait


__all__ = ["IDLE_RETURN_S", "LimiterAdmission", "ReleasingSink"]
