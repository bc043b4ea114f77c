"""What each face asks of the layers below, where the stdlib's two APIs and conveyor differ.

Each public face builds its pool core with one ``CompatPolicy``; the layers below branch
on the policy's fields, never on who is asking. A fourth face (pipelines, the command
line) picks one of these or builds its own, and nothing below changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .._compat import MaybeEncodingError, futures_remote_traceback, mp_remote_traceback
from .._engine._contract import WorkerSetup
from ..errors import PoolClosedError, RemoteTraceback


@dataclass(frozen=True)
class CompatPolicy:
    """One face's conventions.

    ``stdlib_start_method``: with no ``context``, use the start method the stdlib's own
    pools would (the program's choice, else the platform's default), not forkserver.
    ``stdlib_results``: pickle results with the stdlib pickler only, so that what fails
    for the stdlib's pools fails here too. ``result_error``: the exception a result that
    cannot be pickled becomes (None: the pickler's own, with a note naming the task).
    ``remote_traceback_type``: the class of the ``__cause__`` that carries a worker's
    traceback, which code written for the stdlib checks exactly. ``closed_error``: what
    submitting to a closed pool raises.
    """

    name: str
    stdlib_start_method: bool
    stdlib_results: bool
    result_error: type[Exception] | None
    remote_traceback_type: type[Exception]
    closed_error: Callable[[], Exception]

    def worker_setup(self, **options: object) -> WorkerSetup:
        """The backend's ``WorkerSetup``: the pool's ``options`` plus this face's fields."""
        return WorkerSetup(
            stdlib_start_method=self.stdlib_start_method,
            stdlib_results=self.stdlib_results,
            result_error=self.result_error,
            remote_traceback_type=self.remote_traceback_type,
            **options,  # type: ignore[arg-type]
        )


MULTIPROCESSING = CompatPolicy(
    name="multiprocessing",
    stdlib_start_method=True,
    stdlib_results=True,
    result_error=MaybeEncodingError,
    remote_traceback_type=mp_remote_traceback,
    closed_error=lambda: PoolClosedError("Pool not running"),
)

FUTURES = CompatPolicy(
    name="concurrent.futures",
    stdlib_start_method=True,
    stdlib_results=True,
    result_error=None,
    remote_traceback_type=futures_remote_traceback,
    closed_error=lambda: RuntimeError("cannot schedule new futures after shutdown"),
)

CONVEYOR = CompatPolicy(
    name="conveyor",
    stdlib_start_method=False,
    stdlib_results=False,
    result_error=None,
    remote_traceback_type=RemoteTraceback,
    closed_error=lambda: PoolClosedError("this WorkerPool is closed; create a new one"),
)

__all__ = ["CONVEYOR", "FUTURES", "MULTIPROCESSING", "CompatPolicy"]
