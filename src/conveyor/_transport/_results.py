"""A chunk's results on the wire: pickled in the worker, unpickled in the parent.

Shared by every backend whose workers live in another process (the process backend's
socket, Dask's task results). A result that cannot be pickled fails alone, with a note
naming its task; a payload that cannot be unpickled fails the whole chunk, never the
thread reading it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .._run import FAILED, as_task_error
from ..errors import SerializationError, describe_call
from ._serialize import (
    RESULT_NOT_PICKLED_NOTE,
    add_note,
    dumps,
    loads,
    pack_exception,
    stdlib_dumps,
    unpack_exception,
)
from ._shm import AVAILABLE as SHM_AVAILABLE
from ._shm import OutOfBand


class ResultEncoder:
    """Pickles a chunk's results; a result that cannot be pickled fails alone.

    The stdlib-compatible pools pickle results with the stdlib pickler only, and report a
    failure as the stdlib does (``MaybeEncodingError`` for ``multiprocessing``, the
    pickler's own exception for ``concurrent.futures``); conveyor's own API also takes
    what only cloudpickle can pickle (a lambda as a result). ``shared_memory``: large
    buffers go out of band, into shared memory (a worker on this machine).
    """

    def __init__(
        self, stdlib_only: bool, error_type: type[Exception] | None, shared_memory: bool = True
    ) -> None:
        self._error_type = error_type
        self._dumps = stdlib_dumps if stdlib_only else dumps
        self._oob = shared_memory and SHM_AVAILABLE

    def __call__(
        self, values: list[Any], errors: dict[int, BaseException]
    ) -> tuple[bytes, list[int]]:
        """The pickled results, and the shared-memory descriptors of their large buffers."""
        packed = {pos: pack_exception(exc) for pos, exc in errors.items()} if errors else None
        if packed:
            values = [None if v is FAILED else v for v in values]
        oob = OutOfBand() if self._oob else None
        try:
            return self._dumps((values, packed), oob), oob.fds if oob else []
        except BaseException:  # a hostile __reduce__ may raise anything, even SystemExit
            values, packed = self._isolate_failures(values, packed or {})
            oob = OutOfBand() if self._oob else None
            return dumps((values, packed), oob), oob.fds if oob else []

    def _isolate_failures(
        self, values: list[Any], packed: dict[int, Any]
    ) -> tuple[list[Any], dict[int, Any]]:
        for pos, value in enumerate(values):
            if pos in packed:
                continue
            try:
                self._dumps(value)
            except BaseException as exc:
                values[pos] = None
                packed[pos] = pack_exception(self._describe(exc, value, pos))
        return values, packed

    def _describe(self, exc: BaseException, value: Any, pos: int) -> BaseException:
        if self._error_type is not None:  # multiprocessing's MaybeEncodingError
            return self._error_type(exc, value)
        exc = as_task_error(exc)
        return add_note(exc, f"{RESULT_NOT_PICKLED_NOTE} ({type(value).__name__}) to send it back")


def unpickle_failure(exc: BaseException) -> tuple[Any, Any]:
    """The results of a chunk whose arguments the worker could not unpickle."""
    error = SerializationError(f"the worker could not unpickle the task's arguments: {exc!r}")
    return (None, {-1: pack_exception(error)})


def decode_results(
    body: Any, traceback_type: type[Exception], buffers: list[Any] | None = None
) -> tuple[list[Any], dict[int, BaseException]]:
    """Unpickle what ``ResultEncoder`` made: the values, and the errors by position."""
    try:
        values, packed = loads(body, buffers)
    except BaseException as exc:  # even SystemExit from a hostile __reduce__: never let
        # it end the thread reading results, which would leave every caller waiting forever
        error = SerializationError(f"cannot unpickle a task's result in the parent: {exc!r}")
        error.__cause__ = exc
        return [], {-1: error}
    if not packed:
        return values, {}
    return values, {pos: unpack_exception(p, traceback_type) for pos, p in packed.items()}


def name_tasks_of_unpicklable_results(
    errors: dict[int, BaseException], fn: Callable[..., Any], indices: Sequence[int]
) -> None:
    """The worker said a result could not be pickled; the parent knows which task it was
    (``indices``: the chunk's task numbers, by position)."""
    for pos, exc in errors.items():
        if pos < 0:
            continue
        notes = getattr(exc, "__notes__", None) or ()
        if any(isinstance(n, str) and n.startswith(RESULT_NOT_PICKLED_NOTE) for n in notes):
            task = describe_call(fn, indices[pos])
            add_note(exc, f"conveyor: the result was returned by {task}")


__all__ = [
    "ResultEncoder",
    "decode_results",
    "name_tasks_of_unpicklable_results",
    "unpickle_failure",
]
