"""Bad input gets a clear error: at configuration or submit time, naming what and where."""

from __future__ import annotations

import pytest

import conveyor
import tasks


@pytest.mark.parametrize(
    "make",
    [
        lambda: conveyor.WorkerPool(1, timeout="1"),
        lambda: conveyor.Pool(1, task_timeout="1"),
        lambda: conveyor.ProcessPoolExecutor(1, task_timeout=[1]),
        lambda: conveyor.WorkerPool(1, retries="2"),
        lambda: conveyor.WorkerPool(1, retries=True),
    ],
    ids=["timeout-str", "task_timeout-str", "task_timeout-list", "retries-str", "retries-bool"],
)
def test_a_wrongly_typed_option_is_a_type_error_naming_the_option(make):
    with pytest.raises(TypeError, match=r"(timeout|retries) must be"):
        make()


@pytest.mark.parametrize("value", [0, -1.5])
def test_a_timeout_that_is_not_positive_is_a_value_error(value):
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        conveyor.WorkerPool(1, timeout=value)


def _submit_through(face: str, fn):
    if face == "Pool.apply_async":
        with conveyor.Pool(1) as pool:
            return pool.apply_async(fn, (1,))
    if face == "Executor.map":
        with conveyor.ProcessPoolExecutor(1) as ex:
            return ex.map(fn, [1, 2])
    with conveyor.WorkerPool(1) as pool:
        if face == "submit":
            return pool.submit(fn, 1)
        if face == "map":
            return pool.map(fn, [1, 2])
        return pool.imap(fn, iter([1, 2]))


@pytest.mark.parametrize("face", ["submit", "map", "imap", "Pool.apply_async", "Executor.map"])
def test_a_function_that_is_not_callable_fails_at_submit(face):
    with pytest.raises(TypeError, match="the task's function must be callable, not int 5"):
        _submit_through(face, 5)


def test_an_unpicklable_result_names_its_task():
    with conveyor.WorkerPool(1) as pool, pytest.raises(TypeError) as info:
        pool.map(tasks.return_lock, [0, 1])
    notes = "\n".join(info.value.__notes__)
    assert "cannot pickle the result (lock)" in notes
    assert "tasks.return_lock() (item 0)" in notes


def test_a_crash_error_suggests_retries_only_when_none_were_asked_for():
    with (
        conveyor.WorkerPool(1, retries=0) as pool,
        pytest.raises(conveyor.WorkerCrashedError) as plain,
    ):
        pool.submit(tasks.crash_on, 3).result(timeout=30)
    with (
        conveyor.WorkerPool(1, retries=1) as pool,
        pytest.raises(conveyor.WorkerCrashedError) as retried,
    ):
        pool.submit(tasks.crash_on, 3).result(timeout=30)
    assert "Pass retries=N" in str(plain.value)
    assert "Pass retries=N" not in str(retried.value)
    assert "each of 2 attempts (retries=1 are used up)" in str(retried.value)
    assert retried.value.attempts == 2
