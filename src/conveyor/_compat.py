"""The few places conveyor must touch the stdlib's private names, each said why.

Everything here exists so that code written for ``multiprocessing`` or
``concurrent.futures`` sees exactly the types and behaviour it was written against. No
stdlib object is patched; we only read.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import process as _futures_process
from contextlib import contextmanager
from multiprocessing import pool as _mp_pool
from typing import Any

# The class of the remote traceback attached as __cause__. Tests (CPython's own) and user
# code check it exactly: multiprocessing.pool.RemoteTraceback is public; the executor's
# _RemoteTraceback is private but it is what concurrent.futures users get.
mp_remote_traceback: type[Exception] = _mp_pool.RemoteTraceback  # type: ignore[attr-defined]
futures_remote_traceback: type[Exception] = _futures_process._RemoteTraceback

MaybeEncodingError: type[Exception] = _mp_pool.MaybeEncodingError  # type: ignore[attr-defined]


def on_interpreter_exit(callback: Callable[[], Any]) -> None:
    """Run ``callback`` when the interpreter starts shutting down, before atexit handlers.

    concurrent.futures uses ``threading._register_atexit`` so that ``submit`` from an
    atexit handler fails with "cannot schedule new futures after interpreter shutdown";
    we use the same hook to behave the same. Plain atexit is the fallback.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(callback)
    else:
        import atexit

        atexit.register(callback)


def forkserver_preload(ctx: Any, module: str) -> None:
    """Add ``module`` to the fork server's preload list, if the server is not yet running.

    There is no public way to read the current preload list or whether the server
    started; we read both from the module's singleton rather than overwrite the list.
    """
    from multiprocessing import forkserver

    server = forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is not None:
        return
    modules = list(getattr(server, "_preload_modules", ["__main__"]))
    if module not in modules:
        ctx.set_forkserver_preload([*modules, module])


_main_file_lock = threading.Lock()


@contextmanager
def hide_non_file_main(start_method: str) -> Iterator[None]:
    """While a spawn or forkserver worker starts, hide a ``__main__.__file__`` that is no file.

    ``python -`` sets ``__main__.__file__`` to ``'<stdin>'``, and multiprocessing tells
    every spawn and forkserver child to run that path as the main script: each child fails
    with ``FileNotFoundError`` (the stdlib's ``Pool`` then respawns forever). There is no
    public hook into the preparation data, so for the few milliseconds of ``start()`` the
    attribute is removed, and put back after; conveyor then ships the script's functions
    by value (``_mainscript``). A real file, and fork, are left alone.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if start_method == "fork" or not isinstance(path, str) or os.path.isfile(path):
        yield
        return
    with _main_file_lock:
        del main.__file__  # type: ignore[union-attr]
        try:
            yield
        finally:
            main.__file__ = path  # type: ignore[union-attr]


WORKER_NAME_PREFIX = "conveyor-worker-"


def starting_as_worker() -> bool:
    """True while this process is a conveyor worker importing its parent's main module.

    multiprocessing marks a spawn or forkserver child as ``_inheriting`` while it runs the
    parent's main script, and has already given it the name the parent chose. A pool
    created then means a main module without the ``if __name__ == "__main__":`` guard.
    """
    import multiprocessing

    process = multiprocessing.current_process()
    return bool(getattr(process, "_inheriting", False)) and process.name.startswith(
        WORKER_NAME_PREFIX
    )


def forking_reducers() -> dict[type, Callable[[Any], Any]]:
    """The reducers registered with ``multiprocessing.reduction.ForkingPickler``, live.

    multiprocessing registers reducers for sockets and connections there, and libraries
    add theirs (``ForkingPickler.register``); there is no public reader. Reading the live
    dict honours a late registration and costs nothing per pickle, where building a
    ``ForkingPickler`` for each message (which copies it) cost a microsecond and more.
    """
    from multiprocessing.reduction import ForkingPickler

    return ForkingPickler._extra_reducers  # type: ignore[attr-defined]


def process_arguments(process: Any = None) -> list[Any]:
    """The arguments of a ``multiprocessing.Process`` (default: the one this process runs).

    Under fork a child inherits objects without unpickling them; the ones its
    ``Process`` was given are in the process object's private ``_args`` and ``_kwargs``
    (unchanged since Python 2.6; there is no public reader).
    """
    import multiprocessing

    if process is None:
        process = multiprocessing.current_process()
    args = list(getattr(process, "_args", ()) or ())
    kwargs = getattr(process, "_kwargs", {}) or {}
    return args + list(kwargs.values())


def process_being_forked() -> tuple[Any, Any] | None:
    """``(popen, process)`` while multiprocessing's fork start method forks a child.

    For ``os.register_at_fork`` hooks, which are told nothing: the caller is found on the
    stack, as the frame of ``popen_fork.Popen._launch(self, process_obj)`` (its shape
    since Python 3.4). None when the fork is anyone else's.
    """
    try:
        from multiprocessing import popen_fork
    except ImportError:
        return None
    code = popen_fork.Popen._launch.__code__  # type: ignore[attr-defined]
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            local = frame.f_locals
            return local.get("self"), local.get("process_obj")
        frame = frame.f_back  # type: ignore[assignment]
    return None
