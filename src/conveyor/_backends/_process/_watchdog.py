"""Make sure a worker never outlives the pool's process, even a SIGKILLed one.

Runs in the worker process: one daemon thread, ``conveyor-parent-watch``, that ends the
worker (exit code ``WorkerExit.PARENT_GONE``) as soon as the pool's process is gone.
"""

from __future__ import annotations

import os
import select
import threading
import time

from ..._transport._protocol import WorkerExit
from ..._transport._socket import WorkerEnd

# How often a fork worker checks that the pool's process still lives.
PARENT_POLL_S = 0.5


def die_with_parent(pool_pid: int, link: WorkerEnd, start_method: str) -> None:
    """Make sure this worker does not outlive the pool's process, even a SIGKILLed one.

    The socket's other end lives only in the pool's process (forkserver and spawn start
    workers with nothing else inherited), so the kernel flags our socket with POLLRDHUP
    the moment that process dies: a thread blocked in poll() sees it at no cost. Under
    fork, sibling workers inherit copies of the parent's ends, so we poll getppid().
    (The kernel's parent-death signal would not do: under forkserver our parent is the
    fork server, which every worker keeps alive through its inherited "alive" pipe.)
    """
    rdhup = getattr(select, "POLLRDHUP", None)
    if start_method != "fork" and rdhup is not None:
        watch = threading.Thread(target=_watch_socket, args=(link.sock.fileno(), rdhup))
    else:
        watch = threading.Thread(target=_watch_parent_pid, args=(pool_pid, start_method))
    watch.name = "conveyor-parent-watch"
    watch.daemon = True
    watch.start()


def _watch_socket(fd: int, rdhup: int) -> None:
    poller = select.poll()
    poller.register(fd, rdhup)
    while True:
        for _, events in poller.poll():
            if events & (rdhup | select.POLLHUP | select.POLLERR):
                os._exit(WorkerExit.PARENT_GONE)
            if events & select.POLLNVAL:
                return  # our own main thread closed the socket: a normal exit


def _watch_parent_pid(pool_pid: int, start_method: str) -> None:
    # Under fork the pool is our parent, and getppid() changes when it dies; elsewhere
    # (no POLLRDHUP on this platform) only its pid is known.
    while os.getppid() == pool_pid if start_method == "fork" else _alive(pool_pid):
        time.sleep(PARENT_POLL_S)
    os._exit(WorkerExit.PARENT_GONE)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
