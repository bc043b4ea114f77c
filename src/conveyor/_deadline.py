"""``Deadline``: one way to say "wait at most this long" across several waits.

Example::

    deadline = Deadline(timeout)          # timeout: seconds, or None for no limit
    while not done():
        if deadline.expired:
            return False
        condition.wait(deadline.remaining(cap=0.5))
"""

from __future__ import annotations

import time


class Deadline:
    """A moment on the monotonic clock by which something must end, or no moment at all."""

    __slots__ = ("at",)

    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    @property
    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def remaining(self, cap: float | None = None) -> float | None:
        """Seconds left (never negative), at most ``cap``; None means no limit."""
        if self.at is None:
            return cap
        left = max(0.0, self.at - time.monotonic())
        return left if cap is None else min(left, cap)


__all__ = ["Deadline"]
