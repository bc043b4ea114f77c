"""Functions the limiter tests run in other processes."""

from __future__ import annotations

import os
import signal
import time


def call_until(limiter, end, out):
    """Call as fast as the limiter lets us until ``end`` (a monotonic time)."""
    calls = []
    while (left := end - time.monotonic()) > 0:
        if limiter.acquire(timeout=left):
            calls.append(time.monotonic())
    out.put(calls)


def hold_for_a_while(limiter, inside, times):
    for _ in range(times):
        with limiter:
            now = inside.incr("now")
            inside.apply("max", lambda old, now=now: max(old, now), default=0)
            time.sleep(0.01)
            inside.incr("now", -1)


def take_then_die(limiter, ready):
    limiter.acquire()
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def inside_for_a_while(inside, i):
    now = inside.incr("now")
    inside.apply("max", lambda old, now=now: max(old, now), default=0)
    time.sleep(0.02)
    inside.incr("now", -1)
    return i


def started_at(i):
    return time.monotonic()


def crash_once(marker_dir, i):
    marker = os.path.join(marker_dir, f"{i}")
    if i == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return i
