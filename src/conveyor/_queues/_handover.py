"""Handing a queue or a pipe end to a process being started, with no moment in which it
counts for nobody.

A process counts as a producer from when it holds the queue (``_handles.handed_over``).
Counted only from when the child unpickled it, a consumer could see every other producer
finish in the ~50 ms a spawned child takes to get there, and the stream end early. So the
parent opens a producer end of the FIFO *for* the child while it is being started:

- spawn and forkserver: ``__reduce__`` runs while ``multiprocessing`` pickles the child's
  arguments; the end travels with them (``DupFd``) and the child adopts it. The parent
  closes its own copy as soon as the child exists (its ``Popen`` has a pid), which a
  short-lived thread, ``conveyor-queue-handover``, watches for: a launch takes
  milliseconds, and no caller of the queue may be relied on to look;
- fork: just before any fork, the parent opens an end per live queue; the child keeps
  those of the queues among its ``Process`` arguments and closes the others; the parent
  closes its copies as soon as the fork returns.

A pipe end handed to a child being started belongs to that child from when its pid is
known (``when_started``), whether or not it lives long enough to unpickle it.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from multiprocessing.context import get_spawning_popen
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._handles import QueueHandles

CHECK_INTERVAL_S = 0.002


class Handover(Protocol):
    """What is to happen once the child a handover was for exists."""

    def started(self, pid: int | None) -> None:
        """The child is ``pid`` (None: it was never made)."""

    def forget(self) -> None:
        """In a forked child: the handover is the parent's, not ours."""


_lock = threading.Lock()
_pending: list[tuple[weakref.ref[Any], Handover]] = []  # (the child's Popen, what then)
_thread: threading.Thread | None = None


class ParentsCopy:
    """A queue's producer end opened for a child: ours to close once it has its own."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def started(self, pid: int | None) -> None:
        os.close(self.fd)

    def forget(self) -> None:
        os.close(self.fd)


def end_for_spawned_child(handles: QueueHandles) -> int | None:
    """A producer end for the child being spawned now, or None if none is."""
    popen = get_spawning_popen()
    if popen is None:
        return None
    fd = handles.open_writer()
    when_started(popen, ParentsCopy(fd))
    return fd


def when_started(popen: Any, handover: Handover) -> None:
    """Call ``handover.started(pid)`` as soon as the child ``popen`` starts has a pid."""
    with _lock:
        _pending.append((weakref.ref(popen), handover))
        _start_watching()


def _start_watching() -> None:
    global _thread
    if _thread is None:
        _thread = threading.Thread(target=_watch, name="conveyor-queue-handover", daemon=True)
        _thread.start()


def _watch() -> None:
    """Finish the handovers whose children exist; end when none is left."""
    global _thread
    while True:
        with _lock:
            still: list[tuple[weakref.ref[Any], Handover]] = []
            for ref, handover in _pending:
                popen = ref()
                pid = None if popen is None else getattr(popen, "pid", None)
                if popen is None or pid is not None:
                    handover.started(pid)
                else:
                    still.append((ref, handover))
            _pending[:] = still
            if not still:
                _thread = None
                return
        time.sleep(CHECK_INTERVAL_S)


# --- fork -----------------------------------------------------------------------------

_fork_ends: list[tuple[QueueHandles, int]] = []


def before_fork(live: list[QueueHandles]) -> None:
    for handles in live:
        if not handles.closed and handles.pid == os.getpid():
            try:
                _fork_ends.append((handles, handles.open_writer()))
            except OSError:
                pass  # its creator is gone: the child could not produce into it either


def after_fork_in_parent() -> None:
    ends = _fork_ends[:]
    _fork_ends.clear()
    for _, fd in ends:
        os.close(fd)


def after_fork_in_child() -> None:
    """Each inherited end waits for the child's ``Process`` to say whether it was handed
    the queue (``Queue``'s after-fork hook); a fork outside ``multiprocessing`` keeps it
    until the child's first ``get`` or its end."""
    for handles, fd in _fork_ends:
        handles.inherited_end = fd
    _fork_ends.clear()
    global _thread, _lock
    _lock = threading.Lock()  # the watcher may have held it as the fork happened
    for _, handover in _pending:
        handover.forget()  # the parent's, for children it is starting
    _pending.clear()
    _thread = None


__all__ = [
    "Handover",
    "ParentsCopy",
    "after_fork_in_child",
    "after_fork_in_parent",
    "before_fork",
    "end_for_spawned_child",
    "when_started",
]
