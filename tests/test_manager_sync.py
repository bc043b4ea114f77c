"""A Manager's locks, semaphores, events, conditions and barriers: threading's rules,
across processes, and what a dead process held is given back at once."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

import conveyor
import manager_tasks
from conftest import WAIT_S

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def manager():
    with conveyor.Manager() as manager:
        yield manager


def _kill_while_holding(primitive, times=1):
    ready = FORK.Event()
    child = FORK.Process(target=manager_tasks.acquire_then_die, args=(primitive, ready, times))
    child.start()
    assert ready.wait(WAIT_S)
    child.join(WAIT_S)
    assert child.exitcode == -signal.SIGKILL
    return child.pid


def test_a_lock_held_by_a_killed_process_is_given_back_at_once_and_logged(capfd):
    # A spawned server logs to its stderr; a forked one would log into pytest's handlers.
    with conveyor.Manager(ctx=multiprocessing.get_context("spawn")) as manager:
        lock = manager.Lock()
        pid = _kill_while_holding(lock)
        assert lock.acquire(timeout=WAIT_S)  # not a lease: given back when the kernel says
        lock.release()
        deadline = time.monotonic() + WAIT_S
        while f"process {pid} died holding a Lock" not in capfd.readouterr().err:
            assert time.monotonic() < deadline, "the server did not log the holder's death"
            time.sleep(0.05)


def test_the_permits_of_a_killed_process_are_given_back(manager):
    semaphore = manager.BoundedSemaphore(3)
    _kill_while_holding(semaphore, times=2)
    deadline = time.monotonic() + WAIT_S
    while semaphore.get_value() != 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert [semaphore.acquire(False) for _ in range(4)] == [True, True, True, False]
    assert manager.statistics().given_back == 1


def test_a_lock_is_not_given_back_while_its_holder_lives(manager):
    lock = manager.Lock()
    ready, release = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=manager_tasks.acquire_and_hold, args=(lock, ready, release))
    holder.start()
    assert ready.wait(WAIT_S)
    assert lock.acquire(timeout=0.5) is False
    release.set()
    assert lock.acquire(timeout=WAIT_S)
    holder.join(WAIT_S)


def test_locks_keep_threadings_rules(manager):
    lock, rlock = manager.Lock(), manager.RLock()
    assert lock.acquire() and not lock.acquire(False) and lock.locked()
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
    with rlock, rlock:
        pass
    with pytest.raises(RuntimeError):
        rlock.release()
    with pytest.raises(ValueError, match="too many"):
        manager.BoundedSemaphore(1).release()


def test_an_rlock_held_by_a_thread_that_ended_is_given_back(manager):
    rlock = manager.RLock()
    thread = threading.Thread(target=rlock.acquire)
    thread.start()
    thread.join()
    del thread
    assert rlock.acquire(timeout=WAIT_S)  # its connection closed with the thread


def test_an_interrupted_acquire_is_withdrawn_and_takes_nothing(manager):
    lock = manager.Lock()
    ready, release = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=manager_tasks.acquire_and_hold, args=(lock, ready, release))
    holder.start()
    assert ready.wait(WAIT_S)

    def interrupt(*_):
        raise TimeoutError("interrupted")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(TimeoutError):
            lock.acquire()  # blocked in the server's queue when the signal comes
    finally:
        signal.signal(signal.SIGALRM, previous)
    release.set()
    holder.join(WAIT_S)
    assert lock.acquire(timeout=WAIT_S)  # free: the withdrawn wait was not granted
    assert lock.locked()


def test_an_event_set_in_a_child_wakes_a_wait_here(manager):
    event = manager.Event()
    assert event.wait(0.05) is False
    waiter = threading.Thread(target=event.wait, args=(WAIT_S,))
    waiter.start()
    deadline = time.monotonic() + WAIT_S
    while manager.statistics().waiting != 1:  # counted while it waits in the server
        assert time.monotonic() < deadline
        time.sleep(0.01)
    child = FORK.Process(target=manager_tasks.set_event, args=(event,))
    child.start()
    assert event.wait(WAIT_S) is True and event.is_set()
    child.join(WAIT_S)
    waiter.join(WAIT_S)
    assert manager.statistics().waiting == 0


def test_a_condition_wait_is_woken_by_a_notify_from_another_process(manager):
    condition = manager.Condition()
    flag = manager.dict(ready=False)
    with condition:
        child = FORK.Process(target=manager_tasks.notify_when_told, args=(condition, flag))
        child.start()
        assert condition.wait_for(lambda: flag["ready"], timeout=WAIT_S)
    child.join(WAIT_S)
    with condition:
        assert condition.wait(0.05) is False  # timed out, and holds the lock again
        condition.notify()


def test_a_barrier_releases_its_parties_and_breaks_when_one_dies(manager):
    barrier = manager.Barrier(3)
    got = []
    threads = [threading.Thread(target=lambda: got.append(barrier.wait())) for _ in range(2)]
    for thread in threads:
        thread.start()
    got.append(barrier.wait(WAIT_S))
    for thread in threads:
        thread.join(WAIT_S)
    assert sorted(got) == [0, 1, 2] and barrier.parties == 3
    ready = FORK.Event()
    child = FORK.Process(target=manager_tasks.wait_at_barrier_then_die, args=(barrier, ready))
    child.start()
    assert ready.wait(WAIT_S)
    deadline = time.monotonic() + WAIT_S
    while barrier.n_waiting != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join(WAIT_S)
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(WAIT_S)  # not a wait for the dead party
    barrier.reset()
    assert barrier.broken is False


@pytest.mark.parametrize("kind", ["Lock", "BoundedSemaphore"])
def test_a_child_may_acquire_and_exit_and_the_parent_release_for_it(manager, kind):
    # multiprocessing's hand-off: the permit given back at the child's exit is the one
    # the parent's release then gives, not a second one.
    primitive = getattr(manager, kind)()
    child = FORK.Process(target=manager_tasks.acquire_and_exit, args=(primitive,))
    child.start()
    child.join(WAIT_S)
    primitive.release()
    assert primitive.acquire(False) is True
    assert primitive.acquire(False) is False  # one permit in all, not two


def test_an_argument_that_cannot_be_pickled_leaves_what_was_granted_before(manager):
    lock = manager.Lock()
    assert lock.acquire()
    shared = manager.dict()
    with pytest.raises(TypeError):
        shared["lock"] = threading.Lock()  # never sent: nothing to withdraw or undo
    assert lock.locked()  # still ours
    lock.release()
