"""Every exception conveyor raises, in one hierarchy under :class:`ConveyorError`.

Each class also subclasses the stdlib exception a caller would already catch, so code
written against ``multiprocessing`` or ``concurrent.futures`` keeps working::

    try:
        future.result()
    except BrokenProcessPool:      # still catches conveyor.WorkerCrashedError
        ...
"""

from __future__ import annotations

import queue
import signal
from concurrent.futures import CancelledError as _FuturesCancelledError
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.thread import BrokenThreadPool
from multiprocessing import AuthenticationError
from typing import Any

__all__ = [
    "AccessRefusedError",
    "ChannelClosedError",
    "ClusterLostError",
    "ConveyorError",
    "EndOfStream",
    "ManagerGoneError",
    "PipelineAccountingError",
    "PipelineSpentError",
    "PoolClosedError",
    "QueueOwnerGoneError",
    "QueueShutDown",
    "ReceiversGoneError",
    "RemoteTraceback",
    "SerializationError",
    "TaskCancelledError",
    "TaskExitError",
    "TaskTimeoutError",
    "UnpicklableExceptionError",
    "WorkerCrashedError",
    "WorkerInitError",
]


class ConveyorError(Exception):
    """Base class of every error conveyor raises itself.

    Example::

        try:
            conveyor.map(work, items)
        except conveyor.ConveyorError as exc:
            print("conveyor failed:", exc)
    """


class RemoteTraceback(Exception):
    """Carries the formatted traceback of an exception raised in a worker.

    Attached as ``__cause__`` of the re-raised exception, the stdlib convention, so the
    traceback printed in the parent shows where the task failed in the worker.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def describe_callable(fn: Any) -> str:
    """``module.qualname`` of a task's function, for messages."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


def describe_call(fn: Any, index: int | None = None) -> str:
    """``module.fn() (item 3)``: a task, for messages."""
    where = f" (item {index})" if index is not None else ""
    return f"{describe_callable(fn)}(){where}"


def describe_exit(exitcode: int | None) -> str:
    """How a worker process ended, in words: ``SIGKILL (often the kernel's OOM ...)``."""
    if exitcode is None:
        return "an unknown cause"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = {
            "SIGKILL": " (often the kernel's OOM killer, or a kill -9)",
            "SIGSEGV": " (a segmentation fault, usually in a C extension)",
            "SIGABRT": " (an abort, usually a failed assertion in a C extension)",
            "SIGBUS": " (a bus error: bad memory access or a truncated mmap)",
        }.get(name, "")
        return f"{name}{hint}"
    return f"exit code {exitcode}"


class WorkerCrashedError(ConveyorError, BrokenProcessPool):
    """A worker process died while it held this task.

    Subclasses :class:`concurrent.futures.process.BrokenProcessPool`, so existing
    ``except BrokenProcessPool`` clauses still catch it; unlike the stdlib, only the tasks
    the dead worker held fail, and the pool goes on.

    Attributes: ``pid``, ``exitcode`` (negative: the signal number), ``task`` (a short
    description of the task), ``attempts`` (how many times it ran), ``workers`` (the
    workers that died running it, one per attempt: ``"pid 123"``, or a Dask worker's
    address and pid).

    Example::

        try:
            fut.result()
        except conveyor.WorkerCrashedError as exc:
            print(exc.exitcode, exc.task)
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        pid: int | None = None,
        exitcode: int | None = None,
        task: str | None = None,
        attempts: int = 1,
        retries: int = 0,
        workers: list[str] | None = None,
    ) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.task = task
        self.attempts = attempts
        self.workers = list(workers or [])
        if message is None:
            message = (
                f"worker process {pid} died with {describe_exit(exitcode)} while running "
                f"{task or 'a task'} (attempt {attempts}). Likely causes: a crash in native "
                "code, the OOM killer, os._exit() or an external kill. "
                + _next_step_after_crash(attempts, retries)
                + _where(self.workers)
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_crash,
            (str(self), self.pid, self.exitcode, self.task, self.attempts, self.workers),
        )


def _next_step_after_crash(attempts: int, retries: int) -> str:
    if retries == 0:
        return "Pass retries=N to retry such tasks on a fresh worker."
    return (
        f"Its worker died on each of {attempts} attempts (retries={retries} are used up): "
        "the task itself most likely kills the process it runs in."
    )


def _where(workers: list[str]) -> str:
    if len(workers) < 2 and not any(" (" in w for w in workers):
        return ""  # one local process: its pid is named already
    return " Workers that died running it: " + ", ".join(workers) + "."


def _rebuild_crash(
    message: str,
    pid: int | None,
    exitcode: int | None,
    task: str | None,
    attempts: int,
    workers: list[str] | None = None,
) -> WorkerCrashedError:
    return WorkerCrashedError(
        message, pid=pid, exitcode=exitcode, task=task, attempts=attempts, workers=workers
    )


class TaskTimeoutError(ConveyorError, TimeoutError):
    """A task ran longer than its per-task ``timeout``.

    In a process pool the worker running it is stopped and replaced; a thread cannot be
    stopped, so in a thread pool the caller gets this error while the thread runs on.

    Example::

        pool.map(slow, items, timeout=2.0)   # raises TaskTimeoutError for a stuck item
    """

    def __init__(self, message: str, *, task: str | None = None, timeout: float | None = None):
        super().__init__(message)
        self.task = task
        self.timeout = timeout

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_timeout, (str(self), self.task, self.timeout))


def _rebuild_timeout(message: str, task: str | None, timeout: float | None) -> TaskTimeoutError:
    return TaskTimeoutError(message, task=task, timeout=timeout)


class TaskCancelledError(ConveyorError, _FuturesCancelledError):
    """The task was cancelled before it produced a result.

    Example::

        fut.cancel()
        fut.result()   # raises concurrent.futures.CancelledError
    """


class TaskExitError(ConveyorError, SystemExit):
    """A task called ``sys.exit()`` (raised ``SystemExit``).

    The worker survives, and the task fails with this error naming the code it asked for.
    It is a ``SystemExit`` (what ``concurrent.futures`` hands back in this case, so
    ``except SystemExit`` works) and also an ``Exception`` (so ``except Exception`` in the
    caller catches it rather than letting it end the program).

    Example::

        fut = pool.submit(sys.exit, 3)
        fut.exception().code   # 3
    """

    def __init__(self, code: object = None) -> None:
        super().__init__(f"task called sys.exit({code!r}); the worker was kept alive")
        self.code = code  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskExitError, (self.code,))


class SerializationError(ConveyorError, TypeError, BrokenProcessPool):
    """A task's function, arguments or result could not be unpickled on the other side.

    (What cannot be *pickled* fails with the pickler's own exception, as in the stdlib,
    with a note naming the task.) Subclasses :class:`TypeError`, and ``BrokenProcessPool``
    because that is what ``concurrent.futures`` raises here; unlike there, only this task
    fails and the pool goes on.

    Example::

        fut = pool.submit(load, record)     # record's class is missing in the worker
        fut.result()                         # SerializationError: ... could not unpickle
    """


class UnpicklableExceptionError(ConveyorError):
    """A task raised an exception that could not cross the process boundary.

    Carries the original exception's type name and message as text.

    Example::

        except conveyor.UnpicklableExceptionError as exc:
            print(exc.type_name, exc.message)
    """

    def __init__(
        self, type_name: str, message: str, tb: str = "", problem: str = "could not be pickled"
    ) -> None:
        super().__init__(
            f"task raised {type_name}: {message} (the exception itself {problem}, so "
            "conveyor re-raises it as this error)"
        )
        self.type_name = type_name
        self.message = message
        self.tb = tb
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (UnpicklableExceptionError, (self.type_name, self.message, self.tb, self.problem))


class WorkerInitError(ConveyorError, BrokenProcessPool, BrokenThreadPool):
    """A worker's ``initializer`` failed, so the pool cannot start workers.

    Raised to the caller (and set on every pending task) instead of respawning forever.
    Subclasses ``BrokenProcessPool`` and ``BrokenThreadPool`` (so also ``BrokenExecutor``
    and ``RuntimeError``): what the stdlib executors raise in this case.

    Example::

        with conveyor.Pool(2, initializer=broken) as pool:
            pool.map(f, items)   # WorkerInitError: initializer broken() raised ...
    """

    @classmethod
    def initializer_raised(cls, exc: BaseException) -> WorkerInitError:
        error = cls(
            f"the worker initializer raised {type(exc).__name__}: {exc}. The pool cannot "
            "start workers and has stopped; fix the initializer and create a new pool."
        )
        error.__cause__ = exc
        return error

    @classmethod
    def main_without_guard(cls, where: str) -> WorkerInitError:
        return cls(
            f"the pool's workers could not start: {where} creates a process pool when it "
            "is imported, and spawn and forkserver workers import the main module, so "
            "each would start a pool of its own. Put the code that creates the pool under "
            '`if __name__ == "__main__":` (or in a function that only the guard calls).'
        )

    @classmethod
    def died_while_starting(cls, count: int, exitcode: int | None) -> WorkerInitError:
        return cls(
            f"{count} workers in a row died while starting (last: {describe_exit(exitcode)}) "
            "before running any task. Common causes: a main module that starts a pool "
            "without the `if __name__ == '__main__':` guard, an import that fails in a "
            "fresh process, or too little memory. Their output (stderr) says more."
        )


class ClusterLostError(ConveyorError, BrokenProcessPool):
    """The pool lost its cluster (the Dask scheduler is gone or stopped answering).

    Every task not finished fails with it, at once; the pool is broken and takes no more
    work. Subclasses ``BrokenProcessPool``, what a broken stdlib pool raises.

    Example::

        try:
            results = pool.map(f, items)
        except conveyor.ClusterLostError:
            ...  # reconnect: make a new pool once the scheduler is back
    """


class PoolClosedError(ConveyorError, ValueError):
    """Work was submitted to a pool that is closed or shut down.

    Subclasses :class:`ValueError`, what ``multiprocessing.Pool`` raises; executors raise
    :class:`RuntimeError` with the stdlib's message instead.
    """


# --- queues and pipes -------------------------------------------------------------------


class EndOfStream(ConveyorError, EOFError, queue.Empty):
    """The queue is empty and every process that put into it has closed it or died.

    ``for item in queue:`` ends on it; ``get()`` raises it. An :class:`EOFError`, what a
    ``Connection`` raises when its other end is gone, and a :class:`queue.Empty`, what
    code written for ``multiprocessing.Queue`` catches after ``get(False)``::

        try:
            item = q.get()
        except conveyor.EndOfStream:
            ...  # nothing more will come
    """


# ``queue.ShutDown`` is new in Python 3.13; before, the queue's own class stands alone.
_ShutDownBase: type[Exception] = getattr(queue, "ShutDown", Exception)


class QueueShutDown(ConveyorError, _ShutDownBase):  # type: ignore[misc,valid-type]
    """The queue was shut down (``shutdown()``), in this process or another one.

    Raised by ``put`` at once and by ``get`` once the queue is empty (at once after
    ``shutdown(immediate=True)``). A subclass of :class:`queue.ShutDown` on Python 3.13+.
    """


class QueueOwnerGoneError(ConveyorError, OSError):
    """The process that created the queue has exited, so this process cannot join it.

    A queue lives as long as the process that made it: a process that unpickles it
    afterwards has nobody to hand it the queue's descriptors. Processes that joined
    before go on using it.
    """


class ChannelClosedError(ConveyorError, ValueError):
    """A channel handle was used after its ``close()`` (another handle may still be open)."""


class ReceiversGoneError(ConveyorError, BrokenPipeError):
    """Every receive handle of the channel is closed or its process died: nothing sent
    now could ever be read. What was left in the channel is counted in
    ``statistics().undeliverable``."""


class AccessRefusedError(ConveyorError, AuthenticationError):
    """A queue or pipe end reached a process that does not hold its owner's key.

    Descriptors cross to a process that unpickles them through ``multiprocessing``'s
    resource sharer, which serves only processes holding the sender's
    ``multiprocessing.current_process().authkey``: the processes ``multiprocessing``
    (and so conveyor's process pools) start inherit it; a Dask worker or an unrelated
    interpreter does not, and is refused. The sender goes on serving the others.
    """


class ManagerGoneError(ConveyorError, ConnectionError):
    """A ``conveyor.Manager``'s server is gone: it was shut down, it died, or its owner did.

    Every request from then on raises it at once (one clear error, not a flood of
    ``BrokenPipeError``), and names the server and what became of it; the shared
    objects it held are lost.
    """


class PipelineSpentError(ConveyorError, RuntimeError):
    """A pipeline was run (or iterated) a second time: a pipeline runs once, because its
    source may be an iterator that is now used up. Build a new one to run again."""


class PipelineAccountingError(ConveyorError, AssertionError):
    """Items are not all accounted for at the end of a pipeline's run: a bug in
    conveyor. Please report it with the text of the run's report."""


# --- internal signals -------------------------------------------------------------------
# Raised and caught inside conveyor, between two of its layers; never seen by a caller,
# and not part of the public API (not in ``__all__``).


class EncodeError(Exception):
    """Raised by ``WorkerHandle.send`` when some items (or the function) cannot be pickled.

    ``failures`` maps a position in the chunk to its error; position -1 is the function.
    The engine fails those tasks with the pickler's own exceptions.
    """

    def __init__(self, failures: dict[int, BaseException]) -> None:
        super().__init__(failures)
        self.failures = failures


class SocketClosed(EOFError):
    """The other end of a worker's socket is gone (the process on it exited or closed it)."""
