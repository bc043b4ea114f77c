"""Functions the manager tests run in other processes (importable under spawn and forkserver)."""

from __future__ import annotations

import os
import signal
import time


def incr_many(counts, key, times):
    for _ in range(times):
        counts.incr(key)


def cas_increment(counts, key, times):
    """Increment through compare-and-set retries: correct only if the swap is atomic."""
    for _ in range(times):
        while not counts.compare_and_set(key, old := counts[key], old + 1):
            pass


def plus_one(value):
    return value + 1


def apply_many(counts, key, times):
    for _ in range(times):
        counts.apply(key, plus_one, default=0)


def record_pid(shared):
    shared["child"] = os.getpid()


def fill(shared_list, values):
    shared_list.extend(values)
    return len(values)


def use_after_server_died(counts, result):
    import conveyor

    try:
        counts["k"] = 1
    except conveyor.ManagerGoneError as exc:
        result.put(("gone", str(exc)))
    except BaseException as exc:
        result.put(("other", repr(exc)))
    else:
        result.put(("worked", ""))


def start_manager_then_wait(report):
    import conveyor

    manager = conveyor.Manager()
    shared = manager.dict()
    report.put((manager.statistics().server_pid, os.getpid()))
    shared["alive"] = True
    time.sleep(60)


def hold_a_proxy_then_die(shared, ready):
    inner = shared["inner"]  # a proxy of its own, counted for this process
    inner["seen"] = True
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def acquire_then_die(primitive, ready, times=1):
    for _ in range(times):
        primitive.acquire()
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def acquire_and_hold(primitive, ready, release):
    primitive.acquire()
    ready.set()
    release.wait(60)
    primitive.release()


def notify_when_told(condition, flag):
    with condition:
        flag["ready"] = True
        condition.notify_all()


def set_event(event):
    event.set()


def wait_at_barrier_then_die(barrier, ready):
    ready.set()
    barrier.wait()


def locked_read_modify_write(counts, key, times):
    for _ in range(times):
        with counts.lock(key):
            counts[key] = counts[key] + 1  # two requests: safe only under the key's lock


def lock_key_then_die(counts, key, ready):
    counts.lock(key).__enter__()
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def append_later(shared_list, delay_s):
    time.sleep(delay_s)  # the parent's next request goes first
    shared_list.append(1)


def acquire_and_exit(primitive):
    primitive.acquire()  # and exit holding it: the parent releases it (a hand-off)
