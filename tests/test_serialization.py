"""What crosses the process boundary: functions once per worker, clear errors otherwise."""

from __future__ import annotations

import multiprocessing.pool
import os
import threading
from concurrent.futures.process import BrokenProcessPool

import pytest

import conveyor
import tasks


class CountedCall:
    """A callable that counts its pickling (in the parent) and unpickling (in workers)."""

    pickled = 0

    def __init__(self) -> None:
        self.unpickled_in = None

    def __getstate__(self):
        CountedCall.pickled += 1
        return {}

    def __setstate__(self, state):
        CountedCall.unpickles_here = getattr(CountedCall, "unpickles_here", 0) + 1

    def __call__(self, x):
        return (os.getpid(), getattr(CountedCall, "unpickles_here", 0), x)


def test_a_function_is_pickled_once_and_sent_once_per_worker():
    CountedCall.pickled = 0
    fn = CountedCall()
    with conveyor.Pool(2) as pool:
        results = [pool.apply_async(fn, (i,)) for i in range(100)]
        values = [r.get(timeout=30) for r in results]
        values += pool.map(fn, range(100), chunksize=3)
    assert CountedCall.pickled == 1
    assert {unpickles for _, unpickles, _ in values} == {1}
    assert sorted(x for _, _, x in values) == sorted(list(range(100)) * 2)


def _notes(exc: BaseException) -> str:
    return " ".join(getattr(exc, "__notes__", []))


def test_unpicklable_argument_fails_that_task_only_with_the_picklers_error():
    lock = threading.Lock()
    with conveyor.Pool(2) as pool:
        bad = pool.apply_async(tasks.identity, (lock,))
        # The stdlib's exception, as multiprocessing would raise it...
        with pytest.raises(TypeError, match=r"cannot pickle '_thread\.lock'") as info:
            bad.get(timeout=10)
        # ...plus a note that says which task and which function.
        assert "task 0 of tasks.identity" in _notes(info.value)
        results = list(_outcomes(pool.imap(tasks.identity, [1, lock, 3], chunksize=3)))
        assert results[0] == 1
        assert results[2] == 3
        assert isinstance(results[1], TypeError)
        assert "task 1 of tasks.identity" in _notes(results[1])
        assert pool.apply(tasks.square, (5,)) == 25


def _outcomes(iterator):
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            yield exc


def test_unpicklable_function_fails_with_a_clear_error():
    lock = threading.Lock()

    def uses_lock(x):
        with lock:
            return x

    with conveyor.Pool(1) as pool:
        res = pool.apply_async(uses_lock, (1,))
        with pytest.raises(TypeError, match="cannot pickle") as info:
            res.get(timeout=10)
        assert "uses_lock" in _notes(info.value)
        assert pool.apply(tasks.square, (2,)) == 4


def test_unpicklable_result_fails_that_task_naming_it():
    with conveyor.Pool(1) as pool:
        with pytest.raises(multiprocessing.pool.MaybeEncodingError, match="lock"):
            pool.apply(tasks.return_lock)
        assert pool.map(tasks.square, [1, 2]) == [1, 4]
    with conveyor.ProcessPoolExecutor(1) as ex:
        error = ex.submit(tasks.return_lock).exception(timeout=20)
        assert isinstance(error, TypeError)
        assert "cannot pickle the result (lock)" in _notes(error)


def test_only_conveyors_own_api_sends_back_results_that_need_cloudpickle():
    with conveyor.WorkerPool(1) as pool:
        adder = pool.submit(tasks.make_adder, 5).result(timeout=20)
    assert adder(1) == 6
    with conveyor.Pool(1) as pool, pytest.raises(multiprocessing.pool.MaybeEncodingError):
        pool.apply(tasks.make_adder, (5,))


def test_an_argument_the_worker_cannot_unpickle_is_a_serialization_error():
    with conveyor.ProcessPoolExecutor(1) as ex:
        error = ex.submit(tasks.identity, tasks.FailsToUnpickle()).exception(timeout=20)
        assert isinstance(error, conveyor.SerializationError)
        assert isinstance(error, BrokenProcessPool)  # what concurrent.futures raises here
        assert "could not unpickle" in str(error)
        assert ex.submit(tasks.square, 3).result(timeout=20) == 9


def test_exception_that_cannot_be_unpickled_becomes_a_conveyor_error():
    with conveyor.Pool(1) as pool:
        with pytest.raises(conveyor.UnpicklableExceptionError) as info:
            pool.apply(tasks.raise_unpicklable_error)
        assert info.value.type_name == "UnpicklableError"
        assert "1-2" in info.value.message
        # It pickles but cannot be unpickled: the message says which of the two.
        assert "could not be unpickled" in str(info.value)
        assert pool.apply(tasks.square, (3,)) == 9


def test_sys_exit_in_a_task_is_an_error_and_the_worker_lives():
    with conveyor.Pool(1) as pool:
        pid = pool.apply(tasks.pid_of)
        with pytest.raises(conveyor.TaskExitError) as info:
            pool.apply(tasks.call_sys_exit, (3,))
        assert info.value.code == 3
        assert pool.apply(tasks.pid_of) == pid


def test_classes_defined_in_a_test_module_round_trip():
    with conveyor.Pool(1) as pool:
        exc = pool.apply(tasks.identity, (ValueError("x"),))
        assert isinstance(exc, ValueError) and str(exc) == "x"


def test_a_lambdas_remote_traceback_shows_its_file_and_source_line():
    with conveyor.Pool(1) as pool, pytest.raises(ZeroDivisionError) as info:
        pool.apply(lambda: 1 / 0)  # the line the traceback must show
    remote = str(info.value.__cause__)
    assert __file__ in remote
    assert "pool.apply(lambda: 1 / 0)  # the line the traceback must show" in remote
    assert "_execute.py" not in remote  # conveyor's own frames are left out


@pytest.mark.parametrize("kind", ["socket", "connection"])
@pytest.mark.parametrize("face", ["Pool", "ProcessPoolExecutor", "WorkerPool"])
def test_a_socket_or_connection_argument_is_passed_as_the_stdlib_passes_it(
    kind, face, start_method
):
    import multiprocessing
    import socket

    if kind == "socket":
        mine, theirs = socket.socketpair()
        receive = lambda: mine.recv(100)  # noqa: E731
    else:
        mine, theirs = multiprocessing.Pipe()
        receive = lambda: mine.recv_bytes()  # noqa: E731
    try:
        if face == "Pool":
            with conveyor.Pool(1, context=start_method) as pool:
                sent = pool.apply(tasks.send_through, (theirs, b"hello"))
        else:
            cls = conveyor.WorkerPool if face == "WorkerPool" else conveyor.ProcessPoolExecutor
            kwargs = {"context": start_method} if face == "WorkerPool" else {}
            if face == "ProcessPoolExecutor":
                kwargs = {"mp_context": multiprocessing.get_context(start_method)}
            with cls(1, **kwargs) as pool:
                sent = pool.submit(tasks.send_through, theirs, b"hello").result(timeout=30)
        assert sent == 5
        assert receive() == b"hello"
    finally:
        mine.close()
        theirs.close()
