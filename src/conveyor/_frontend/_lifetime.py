"""No worker outlives the interpreter: the engines alive at exit, and what to do with each.

Executors finish their work first (as the stdlib's do at exit); pools are terminated (as
the stdlib's finalizer does). A program ended by Ctrl-C wants to stop, not to wait for
running tasks, so then every engine is terminated.
"""

from __future__ import annotations

import atexit
import sys
import threading
import weakref

from .._engine._engine import Engine

_live_engines: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()
_live_lock = threading.Lock()


def track(engine: Engine, *, finish_at_exit: bool) -> None:
    with _live_lock:
        _live_engines[engine] = finish_at_exit


def forget(engine: Engine) -> None:
    with _live_lock:
        _live_engines.pop(engine, None)


@atexit.register
def _stop_live_engines() -> None:
    with _live_lock:
        engines = list(_live_engines.items())
    # The interpreter records the uncaught exception before it runs atexit hooks.
    interrupted = isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)
    for engine, finish in engines:
        if finish and not interrupted:
            engine.close()
            engine.join()
        else:
            engine.terminate()
    for engine, _ in engines:
        engine.join(timeout=5)


__all__ = ["forget", "track"]
