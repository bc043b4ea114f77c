"""Stage functions for the pipeline tests; a module of their own, so process workers
import them by name."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time

from tasks import crash_item_first_time  # noqa: F401 (a stage function here too)


def square(x):
    return x * x


def is_even(x):
    return x % 2 == 0


def twice(x):
    return [x, x]


def children(x):
    """0 to 2 children: x % 3 of them (a third of the items have none)."""
    yield from [x * 10 + k for k in range(x % 3)]


def jitter_square(x):
    """``x * x`` after a random delay of up to 2 ms, so finishing order shuffles."""
    time.sleep(random.random() * 0.002)
    return x * x


def fail_on_multiples_of_7(x):
    if x % 7 == 0:
        raise ValueError(f"{x} is a multiple of 7")
    return x


def fail_on_5(x):
    if x == 5:
        raise ValueError("five is not allowed")
    return x


def always_fail(x):
    raise KeyError(x)


def slow_identity(x, seconds=0.05):
    time.sleep(seconds)
    return x


def sleep_long_on(x, bad=3, seconds=30.0):
    if x == bad:
        time.sleep(seconds)
    return x


def slow_first(x, seconds=1.0):
    if x == 0:
        time.sleep(seconds)
    return x


def always_crash_on(x, bad=3):
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def pid_of(_x):
    return os.getpid()


class Concurrency:
    """Counts coroutines in flight and the most there ever were (an async stage's)."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.cancelled = 0
        self.lock = threading.Lock()

    async def sleepy(self, x, seconds=0.05):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            with self.lock:
                self.now -= 1
        return x


async def async_square(x):
    await asyncio.sleep(0)
    return x * x


async def async_hang_on(x, bad=2):
    if x == bad:
        await asyncio.sleep(60)
    return x


_in_flight = {"now": 0, "peak": 0}


async def async_peak(x, seconds=0.05):
    """Sleep; return the most coroutines this process had in flight so far."""
    _in_flight["now"] += 1
    _in_flight["peak"] = max(_in_flight["peak"], _in_flight["now"])
    try:
        await asyncio.sleep(seconds)
    finally:
        _in_flight["now"] -= 1
    return x, os.getpid(), _in_flight["peak"]


async def async_fail_on_3(x):
    await asyncio.sleep(0)
    if x == 3:
        raise ValueError("three")
    return x


class Starts:
    """Records when each call started (monotonic), across threads or coroutines."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    async def note(self, x):
        with self.lock:
            self.times.append(time.monotonic())
        await asyncio.sleep(0)
        return x

    def hold(self, x, seconds=0.02):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1
        return x
