"""The machine's floors: what the hardware and the OS cost, with no pool involved.

A pool's round trip cannot beat a pipe ping-pong, its throughput of small calls is bounded
by pickling, and its payload bandwidth by pipe bandwidth and memcpy.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

from . import tasks
from .config import MB
from .measure import check, rate_figure, repeat_timed, scaled_figure

PICKLE_CALLS = 200_000
MEMCPY_BYTES = 8 * MB
MEMCPY_COPIES = 100
PIPE_TOTAL_BYTES = 1024 * MB
# 64 KiB is the default pipe buffer on Linux, the size a pool's pipe works in.
PIPE_CHUNK_BYTES = 64 * 1024
PING_PONG_ROUND_TRIPS = 20_000
NO_BUDGET_S = float("inf")


def pickle_round_trips() -> None:
    call = (tasks.square, (12345,), {})
    for _ in range(PICKLE_CALLS):
        pickle.loads(pickle.dumps(call))


def memcpy_copies() -> None:
    source = np.ones(MEMCPY_BYTES // 8)
    target = np.empty_like(source)
    for _ in range(MEMCPY_COPIES):
        np.copyto(target, source)


def _in_child(work) -> int:
    """Fork a child that runs ``work()`` then exits at once; return its pid."""
    pid = os.fork()
    if pid == 0:
        try:
            work()
        finally:
            os._exit(0)
    return pid


def pipe_bandwidth() -> None:
    read_fd, write_fd = os.pipe()

    def write_all() -> None:
        os.close(read_fd)
        chunk = memoryview(bytes(PIPE_CHUNK_BYTES))
        for _ in range(PIPE_TOTAL_BYTES // PIPE_CHUNK_BYTES):
            sent = 0
            while sent < len(chunk):
                sent += os.write(write_fd, chunk[sent:])

    pid = _in_child(write_all)
    os.close(write_fd)
    received = 0
    while block := os.read(read_fd, PIPE_CHUNK_BYTES):
        received += len(block)
    os.close(read_fd)
    os.waitpid(pid, 0)
    check(received == PIPE_TOTAL_BYTES, "bytes through the pipe")


def pipe_ping_pong() -> None:
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()

    def echo() -> None:
        # Drop the parent's ends, or the child never sees end-of-file and never exits.
        os.close(to_child_w)
        os.close(to_parent_r)
        while os.read(to_child_r, 1):
            os.write(to_parent_w, b"p")

    pid = _in_child(echo)
    for _ in range(PING_PONG_ROUND_TRIPS):
        os.write(to_child_w, b"p")
        os.read(to_parent_r, 1)
    os.close(to_child_w)  # the child's read returns b"" and it exits
    os.waitpid(pid, 0)
    for fd in (to_child_r, to_parent_r, to_parent_w):
        os.close(fd)


def measure_physical(repeats: int) -> dict[str, Any]:
    def times(run) -> list[float]:
        run()  # warm-up
        return repeat_timed(run, repeats, NO_BUDGET_S)

    return {
        "pickle_calls_per_s": rate_figure(PICKLE_CALLS, times(pickle_round_trips)),
        "memcpy_gb_s": rate_figure(MEMCPY_COPIES * MEMCPY_BYTES / 1e9, times(memcpy_copies)),
        "pipe_gb_s": rate_figure(PIPE_TOTAL_BYTES / 1e9, times(pipe_bandwidth)),
        "pipe_round_trip_us": scaled_figure(1e6 / PING_PONG_ROUND_TRIPS, times(pipe_ping_pong)),
    }
