"""How objects cross the process boundary: pickling of data, functions and exceptions.

Data (arguments, results) goes through the stdlib's C pickler first because it is several
times faster than cloudpickle for plain data; only what it refuses (lambdas, closures,
local classes) falls back to cloudpickle. Functions always go through cloudpickle, once per
worker (see ``FunctionTable``), so a lambda or a function defined in a REPL just works.
"""

from __future__ import annotations

import copyreg
import io
import marshal
import os
import pickle
import traceback
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle

from .._compat import forking_reducers
from ..errors import (
    RemoteTraceback,
    SerializationError,
    UnpicklableExceptionError,
    describe_callable,
)
from ._mainscript import MainView, WorkerView, is_main_object, reduce_main_function
from ._shm import OutOfBand

PROTOCOL = 5
# The worker's note on a result it could not pickle; the parent, which knows which task
# it was, adds one naming it.
RESULT_NOT_PICKLED_NOTE = "conveyor: cannot pickle the result"

_PICKLE_FAILURES = (pickle.PicklingError, TypeError, AttributeError, ValueError)


# The chunk runner, whose frames a remote traceback skips.
_RUNNER_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "_run.py")


def _reduce_code(code: types.CodeType) -> tuple[Any, ...]:
    return (marshal.loads, (marshal.dumps(code),))


class _ByValuePickler(cloudpickle.Pickler):
    """cloudpickle, with the main script's rule and code objects that keep their file name.

    Functions and classes of ``__main__`` go by reference when the receiving side finds
    them by name (``view``), else by value into the receiver's one namespace for the main
    script (see ``_mainscript``). cloudpickle renames the code of functions it pickles by
    value to "<dynamic-code>", which would strip the file and source line from every
    traceback of a lambda raised in a worker; ``marshal`` keeps the whole code object, and
    parent and workers always run the same interpreter, so its format is safe here.
    """

    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)

    def __init__(self, file: Any, view: _View, buffer_callback: OutOfBand | None) -> None:
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffer_callback)
        self._view = view
        # What multiprocessing's pickler passes (sockets, connections...) passes here too.
        self.dispatch_table = ChainMap(type(self).dispatch_table, _stdlib_reducers())

    def reducer_override(self, obj: Any) -> Any:
        if is_main_object(obj):
            if self._view.by_reference(obj):
                return NotImplemented  # the stdlib's save_global: "__main__ name"
            if isinstance(obj, types.FunctionType):
                return reduce_main_function(obj)
        return super().reducer_override(obj)


class _ReferencePickler(pickle.Pickler):
    """The stdlib's C pickler with multiprocessing's reducers, refusing a main-script object
    the receiver cannot find.

    The reducers multiprocessing registers apply, so a socket or a ``Connection`` passed
    to a task is passed as the stdlib's ``Pool`` passes it (its descriptor is duplicated
    into the worker). ``reducer_override`` is not called for plain data (ints, strings,
    lists, dicts...), so this costs nothing on the common path; a refusal sends the whole
    object through ``_ByValuePickler``. ``Serializer`` makes one subclass per view, so
    that making a pickler runs no Python code.
    """

    _view: _View

    def reducer_override(self, obj: Any) -> Any:
        if is_main_object(obj) and not self._view.by_reference(obj):
            raise _NeedsValue(obj)
        reduce = _FORKING_REDUCERS.get(type(obj))
        return NotImplemented if reduce is None else reduce(obj)


class _NeedsValue(pickle.PicklingError):
    """A main-script object that must travel by value."""


_View = MainView | WorkerView


_FORKING_REDUCERS = forking_reducers()


def _stdlib_reducers() -> Any:
    """copyreg's reducers plus those registered with multiprocessing (looked up live)."""
    return ChainMap(_FORKING_REDUCERS, copyreg.dispatch_table)


def _by_value(obj: Any, view: _View, oob: Any) -> bytes:
    buffer = io.BytesIO()
    _ByValuePickler(buffer, view, oob).dump(obj)
    return buffer.getvalue()


def _close(oob: OutOfBand | None) -> None:
    if oob is not None:
        oob.close()


def _by_reference(pickler: type[_ReferencePickler], obj: Any, oob: Any) -> bytes:
    buffer = io.BytesIO()
    pickler(buffer, PROTOCOL, buffer_callback=oob).dump(obj)
    return buffer.getvalue()


class Serializer:
    """Pickling for one side of a pool, with that side's view of the main script.

    The parent uses a ``MainView`` (what its workers find by reference); a worker, or any
    process pickling for itself, uses a ``WorkerView`` (what the parent finds by name).
    """

    def __init__(self, view: _View) -> None:
        self.view = view
        self._reference = type("_ReferencePickler", (_ReferencePickler,), {"_view": view})

    def dumps(self, obj: Any, oob: OutOfBand | None = None) -> bytes:
        """Pickle ``obj``: the fast C pickler, or cloudpickle for what it cannot handle.

        With ``oob``, large buffers (NumPy arrays...) go out of band into shared memory; on
        failure its descriptors are closed.
        """
        return self._dumps(obj, oob, fall_back_on=_PICKLE_FAILURES)

    def stdlib_dumps(self, obj: Any, oob: OutOfBand | None = None) -> bytes:
        """Pickle ``obj`` by the stdlib's rules (the drop-in pools' results).

        What the stdlib pickler refuses fails as with the stdlib, except the main script's
        own objects that must travel by value: an instance of a class that came by value
        from the parent goes back as that class.
        """
        return self._dumps(obj, oob, fall_back_on=_NeedsValue)

    def _dumps(
        self, obj: Any, oob: OutOfBand | None, fall_back_on: type[BaseException] | tuple[Any, ...]
    ) -> bytes:
        """The C pickler first; cloudpickle after a failure of the ``fall_back_on`` kind.

        Whatever fails closes ``oob``'s descriptors (the retry starts with none).
        """
        try:
            return _by_reference(self._reference, obj, oob)
        except BaseException as exc:
            _close(oob)
            if not isinstance(exc, fall_back_on):
                raise
        try:
            return _by_value(obj, self.view, oob)
        except BaseException:
            _close(oob)
            raise

    def dumps_by_value(self, obj: Any) -> bytes:
        """Pickle ``obj`` with cloudpickle (and the main script's rule) straight away."""
        return _by_value(obj, self.view, None)

    def dumps_function(self, fn: Callable[..., Any]) -> bytes:
        """Pickle a callable, by value where needed (lambdas, closures, REPL code).

        On failure the pickler's own exception propagates (as the stdlib's would), with a
        note naming the function.
        """
        try:
            return self.dumps_by_value(fn)
        except Exception as exc:
            add_note(exc, f"conveyor: cannot pickle the function {describe_callable(fn)}")
            raise


# This process pickling for its own use, or a worker pickling for its parent.
LOCAL = Serializer(WorkerView())
dumps = LOCAL.dumps
stdlib_dumps = LOCAL.stdlib_dumps


def loads(data: Any, buffers: list[Any] | None = None) -> Any:
    """Unpickle ``data``; ``buffers`` are the out-of-band buffers it refers to, in order."""
    if buffers:
        return pickle.loads(data, buffers=buffers)
    return pickle.loads(data)


class BrokenFunction:
    """Stands in for a task's function that a worker could not unpickle: every call
    raises a ``SerializationError`` that says why, so each task fails, and the worker
    goes on."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise SerializationError(
            f"the worker could not unpickle the task's function: {self.error!r}"
        ) from self.error


def load_function(data: Any) -> Any:
    """A task's function from its pickle, or a ``BrokenFunction`` saying why not."""
    try:
        return loads(data)
    except Exception as exc:
        return BrokenFunction(exc)


def add_note(exc: BaseException, note: str) -> BaseException:
    """Attach ``note`` to ``exc`` (PEP 678; shown in tracebacks on 3.11+). Returns ``exc``."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # Python 3.10
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
    return exc


def unpicklable_reason(obj: Any) -> str | None:
    """Why ``obj`` cannot be pickled, or None if it can."""
    try:
        dumps(obj)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --- exceptions --------------------------------------------------------------------------


def pack_exception(exc: BaseException) -> tuple[str, Any, str]:
    """Turn an exception raised in a worker into something that surely crosses back.

    Returns ``(kind, payload, formatted_traceback)``. The exception is pickled *and*
    unpickled here, in the worker, because many exception classes pickle fine but fail to
    unpickle (a custom ``__init__`` signature); finding out in the parent would be too late
    to say which task it was.
    """
    tb = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__)))
    # The traceback and chained exceptions hold frames; drop them before pickling.
    exc.__traceback__ = None
    try:
        data = dumps(exc)
    except Exception as error:
        return ("text", (type(exc).__qualname__, _safe_str(exc), _pickle_problem(error)), tb)
    try:
        pickle.loads(data)
    except Exception as error:
        problem = f"could not be unpickled ({type(error).__name__}: {_safe_str(error)})"
        return ("text", (type(exc).__qualname__, _safe_str(exc), problem), tb)
    return ("pickle", (data, type(exc).__qualname__, _safe_str(exc)), tb)


def _pickle_problem(error: BaseException) -> str:
    return f"could not be pickled ({type(error).__name__}: {_safe_str(error)})"


def _user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """Skip the frames of conveyor's own chunk runner: the user's code comes first."""
    while tb is not None and tb.tb_frame.f_code.co_filename == _RUNNER_FILE:
        tb = tb.tb_next
    return tb


def unpack_exception(
    packed: tuple[str, Any, str], traceback_type: type[Exception] = RemoteTraceback
) -> BaseException:
    """Rebuild a worker's exception, its remote traceback attached as ``__cause__``."""
    kind, payload, tb = packed
    if kind == "pickle":
        data, type_name, message = payload
        try:
            exc: BaseException = pickle.loads(data)
        except BaseException as error:  # even SystemExit from a hostile __reduce__
            problem = f"could not be unpickled in the parent ({type(error).__name__}: {error})"
            exc = UnpicklableExceptionError(type_name, message, tb, problem)
    else:
        type_name, message, problem = payload
        exc = UnpicklableExceptionError(type_name, message, tb, problem)
    exc.__cause__ = traceback_type(f'\n"""\n{tb}"""')
    return exc


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose str() failed>"
