"""The outbox: deliveries to sinks and subscribers run after the engine lock is released.

A state change under the lock queues *thunks* (a function and its arguments: deliver
these results, fail this task, close this job's sink, publish these events) into a list;
``Outbox.deliver`` runs them once the lock is released, so no user callback ever runs
under it and a slow callback never stalls the engine.

On one thread, the process backend's supervisor, deliveries wait longer: until just
before it blocks in ``select`` (``defer`` / ``run_deferred``). A caller woken earlier
would wake to find the GIL still held by the supervisor, and sleep again until it is
released, which is one more thread wake-up on every round trip (~25 us here).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .._callbacks import call_reporting_errors

Thunk = tuple[Callable[..., Any], tuple[Any, ...]]
Thunks = list[Thunk]


class Outbox:
    def __init__(self) -> None:
        self._deferring_thread: int | None = None
        self._deferred: Thunks = []  # touched only by the deferring thread

    def deliver(self, out: Thunks) -> None:
        """Run ``out`` now, or, on the deferring thread, when it calls ``run_deferred``."""
        if self.on_deferring_thread:
            self._deferred.extend(out)
        else:
            run_thunks(out)

    def defer(self) -> None:
        """From now on, hold back the calling thread's deliveries until ``run_deferred``."""
        self._deferring_thread = threading.get_ident()

    @property
    def on_deferring_thread(self) -> bool:
        return threading.get_ident() == self._deferring_thread

    def run_deferred(self) -> None:
        """Run the deliveries held back on the deferring thread (call only from it)."""
        while self._deferred:
            out, self._deferred = self._deferred, []
            run_thunks(out)


def run_thunks(out: Thunks) -> None:
    """Run deliveries; each may run user callbacks, whose exceptions never stop the rest."""
    interrupted: KeyboardInterrupt | None = None
    for fn, args in out:
        try:
            call_reporting_errors(fn, *args)
        except KeyboardInterrupt as exc:  # Ctrl-C on the main thread: deliver, then raise
            interrupted = exc
    if interrupted is not None:
        raise interrupted


__all__ = ["Outbox", "Thunk", "Thunks", "run_thunks"]
