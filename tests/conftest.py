"""Shared fixtures: every test runs under a timeout and must leave nothing behind.

After each test, no child process (nor zombie) of the test process may remain, other than
multiprocessing's own long-lived helpers (the fork server, the resource tracker), and no
``conveyor-*`` thread may still run. Pools are given a few seconds to wind down first.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time

import psutil
import pytest

import conveyor
from conveyor.workers import shutdown_shared_pools

sys.path.insert(0, os.path.dirname(__file__))

LEAK_GRACE_S = 10.0

# Every start method the platform offers for process pools; "thread" for thread pools.
PROCESS_METHODS = [
    m for m in ("forkserver", "spawn", "fork") if m in multiprocessing.get_all_start_methods()
]


def _helper_pids() -> set[int]:
    """multiprocessing's own helper processes, shared by every pool in the process."""
    pids = set()
    from multiprocessing import forkserver, resource_tracker

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid:
        pids.add(pid)
    pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    if pid:
        pids.add(pid)
    return pids


def leftover_processes() -> list[psutil.Process]:
    helpers = _helper_pids()
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    return [p for p in children if p.pid not in helpers]


def leftover_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.is_alive()
        and t not in before
        and t.name.startswith(("conveyor-", "ThreadPoolExecutor-"))
    ]


@pytest.fixture(autouse=True)
def no_leaks():
    before = set(threading.enumerate())
    yield
    shutdown_shared_pools()
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        procs = leftover_processes()
        threads = leftover_threads(before)
        if not procs and not threads:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    described = [f"{p.pid} {_describe(p)}" for p in procs]
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    pytest.fail(
        f"test left processes {described} and threads {[t.name for t in threads]} behind",
        pytrace=False,
    )


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.status()} {' '.join(p.cmdline())[:80]}"
    except psutil.Error:
        return "(gone)"


@pytest.fixture(params=["process", "thread"])
def backend(request) -> str:
    """The behaviour suite runs once per backend."""
    return request.param


@pytest.fixture(params=PROCESS_METHODS)
def start_method(request) -> str:
    return request.param


@pytest.fixture
def make_pool(backend):
    """Build drop-in pools for the current backend; terminates whatever the test left open."""
    pools = []

    def make(*args, **kwargs):
        cls = conveyor.Pool if backend == "process" else conveyor.ThreadPool
        if backend == "thread":
            kwargs.pop("maxtasksperchild", None)
            kwargs.pop("context", None)
        pool = cls(*args, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.terminate()
