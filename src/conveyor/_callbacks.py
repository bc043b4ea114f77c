"""User callbacks on conveyor's threads: an exception is reported, never fatal.

A done-callback, ``callback=`` or ``error_callback=`` runs on whichever thread settled
the task, often the supervisor. The stdlib lets an exception there kill that thread
(``multiprocessing.Pool`` then hangs) and lets ``SystemExit`` escape a
``concurrent.futures`` callback; here every exception is logged to the ``conveyor``
logger with its traceback, and the thread goes on. The one exception passed on is a
``KeyboardInterrupt`` on the main thread: that is the user's Ctrl-C, raised by the signal
handler while a callback happened to run, and it must reach them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("conveyor")


def call_reporting_errors(fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn(*args)``; log what it raises (but a main-thread Ctrl-C, re-raised)."""
    try:
        fn(*args)
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            raise
        logger.exception("KeyboardInterrupt raised by a callback (%r); ignored", fn)
    except BaseException:  # SystemExit too: a callback must never end a conveyor thread
        logger.exception("exception in a callback (%r); the pool goes on", fn)
