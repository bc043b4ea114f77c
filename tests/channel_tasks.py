"""Functions the channel tests run in other processes (importable under spawn and forkserver)."""

from __future__ import annotations

import os
import signal
import time


def send_range(tx, start, count):
    for i in range(start, start + count):
        tx.send(i)
    return count


def send_then_die(tx, count):
    for i in range(count):
        tx.send(i)
    os.kill(os.getpid(), signal.SIGKILL)


def receive_then_die(rx, count, taken):
    """Take ``count`` items, report them, wait until the channel is full (its sender
    is then blocked), then SIGKILL itself: no close, no exit handlers."""
    taken.put([rx.receive() for _ in range(count)])
    deadline = time.monotonic() + 30
    while rx.statistics().depth < rx.maxsize and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGKILL)


def take_handle_and_send(handles, count):
    tx = handles.get(timeout=30)
    send_range(tx, 0, count)


def sleep(seconds):
    time.sleep(seconds)
