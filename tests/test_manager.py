"""conveyor.Manager: shared containers across processes, updates that are never lost,
a server whose death is one clear error, and that lets in only holders of the key."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal

import pytest

import conveyor
import manager_tasks
from conftest import WAIT_S, process_gone, refused_to_a_stranger, wait_until
from conveyor import (
    AccessRefusedError,  # noqa: F401 (the stranger's error, by name)
    ManagerGoneError,
)
from conveyor.workers import WorkerPool

METHODS = ["fork", "spawn", "forkserver"]


@pytest.fixture
def manager():
    with conveyor.Manager() as manager:
        yield manager


def _run(ctx, target, *args):
    process = ctx.Process(target=target, args=args)
    process.start()
    process.join(WAIT_S)
    assert process.exitcode == 0, f"{target.__name__} ended with {process.exitcode}"


# --- the containers -----------------------------------------------------------------------


def test_a_shared_dict_behaves_as_a_dict_and_is_seen_by_a_child(manager):
    d = manager.dict(a=1)
    d["b"] = 2
    assert (d["a"], d["b"], len(d), "a" in d, "z" in d) == (1, 2, 2, True, False)
    assert d.get("z", 9) == 9 and d.setdefault("c", 3) == 3 and d.pop("c") == 3
    assert sorted(d.keys()) == ["a", "b"] and sorted(d.items()) == [("a", 1), ("b", 2)]
    with pytest.raises(KeyError):
        d["missing"]
    _run(multiprocessing.get_context("spawn"), manager_tasks.record_pid, d)
    assert d["child"] not in (os.getpid(), manager.statistics().server_pid)
    assert d.copy() == {"a": 1, "b": 2, "child": d["child"]}


def test_a_shared_list_namespace_value_and_array_behave_as_theirs(manager):
    shared = manager.list([1, 2])
    shared += [3]
    shared *= 2
    assert (
        shared[:] == [1, 2, 3, 1, 2, 3]
        and shared[-1] == 3
        and list(reversed(shared)) == [3, 2, 1, 3, 2, 1]
    )
    _run(multiprocessing.get_context("fork"), manager_tasks.fill, shared, [7, 8])
    assert shared[6:] == [7, 8]
    ns = manager.Namespace(name="Bob")
    ns.job = "Builder"
    ns._local = "stays here"
    assert (ns.name, ns.job, str(ns)) == ("Bob", "Builder", "Namespace(job='Builder', name='Bob')")
    del ns.job
    assert not hasattr(ns, "job")
    value = manager.Value("i", 3)
    value.value += 1
    assert (value.value, value.incr(5), value.get()) == (4, 9, 9)
    array = manager.Array("i", [0, 1, 2])
    array[0] = 5
    assert (len(array), list(array), array[1:].tolist()) == (3, [5, 1, 2], [1, 2])


def test_iterating_a_dict_that_changes_size_raises_as_a_dict_does(manager):
    d = manager.dict({i: str(i) for i in range(1000)})  # several batches
    assert list(d) == list(range(1000))
    it = iter(d)
    next(it)
    d.clear()
    with pytest.raises(RuntimeError, match="changed size"):
        for _ in it:
            pass


def test_proxies_stored_in_shared_containers_stay_shared(manager):
    inner = manager.dict(water=10)
    outer = manager.list([inner, [1, 2]])
    outer[0]["feed"] = 3
    assert inner["feed"] == 3
    assert isinstance(outer[1], list) and isinstance(outer[0], conveyor.DictProxy)
    del inner
    assert outer[0]["water"] == 10  # held by the list now
    assert manager.statistics().objects == 2
    del outer
    assert manager.statistics().objects == 0  # the list, and the dict only it held


# --- updates that are never lost -------------------------------------------------------


def test_eight_processes_making_ten_thousand_increments_each_lose_none(manager):
    counts = manager.dict()
    ctx = multiprocessing.get_context("fork")
    workers = [
        ctx.Process(target=manager_tasks.incr_many, args=(counts, "n", 10_000)) for _ in range(8)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    assert counts["n"] == 80_000


@pytest.mark.parametrize("task", [manager_tasks.cas_increment, manager_tasks.apply_many])
def test_compare_and_set_and_apply_from_several_processes_lose_no_update(manager, task):
    counts = manager.dict(n=0)
    with WorkerPool(4) as pool:
        pool.map(lambda _: task(counts, "n", 500), range(4))
    assert counts["n"] == 2000


def test_apply_takes_a_lambda_and_a_default(manager):
    d = manager.dict()
    assert d.apply("best", lambda old: max(old, 7), default=0) == 7
    assert d.apply("best", lambda old: max(old, 3)) == 7
    with pytest.raises(KeyError):
        d.apply("missing", lambda old: old)
    assert d.compare_and_set("best", 6, 1) is False and d["best"] == 7


# --- proxies across processes ------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_proxies_reach_children_under_every_start_method(manager, method):
    counts = manager.dict()
    _run(multiprocessing.get_context(method), manager_tasks.incr_many, counts, "k", 10)
    assert counts["k"] == 10


def test_a_process_forked_after_the_manager_started_uses_its_objects(manager):
    counts = manager.dict(n=0)
    counts["n"] = 1  # this process has a connection: the child must not use it
    pid = os.fork()
    if pid == 0:
        try:
            counts.incr("n")
        finally:
            os._exit(0)
    counts.incr("n")
    os.waitpid(pid, 0)
    assert counts["n"] == 3


def test_an_object_is_freed_once_no_process_holds_it(manager):
    shared = manager.dict()
    shared["inner"] = manager.dict()
    base = manager.statistics().objects
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=manager_tasks.hold_a_proxy_then_die, args=(shared, ready))
    child.start()
    assert ready.wait(WAIT_S)
    child.join(WAIT_S)
    assert child.exitcode == -signal.SIGKILL
    del shared["inner"]  # now only the dead child held it
    wait_until(lambda: manager.statistics().objects == base - 1, "the inner dict freed")


# --- the server --------------------------------------------------------------------------


def test_a_killed_server_is_one_clear_error_for_every_client(manager):
    counts = manager.dict()
    counts["k"] = 0
    os.kill(manager.statistics().server_pid, signal.SIGKILL)
    with pytest.raises(ManagerGoneError, match=r"is gone \(it ended with SIGKILL"):
        counts["k"] = 1
    with pytest.raises(ManagerGoneError):
        counts.incr("k")  # at once, from then on
    ctx = multiprocessing.get_context("fork")
    result = ctx.SimpleQueue()
    _run(ctx, manager_tasks.use_after_server_died, counts, result)
    kind, message = result.get()
    assert kind == "gone", message


def test_the_server_exits_when_its_owner_is_killed():
    ctx = multiprocessing.get_context("spawn")
    report = ctx.SimpleQueue()
    owner = ctx.Process(target=manager_tasks.start_manager_then_wait, args=(report,))
    owner.start()
    server_pid, owner_pid = report.get()
    os.kill(owner_pid, signal.SIGKILL)
    owner.join(WAIT_S)
    wait_until(lambda: process_gone(server_pid), "the orphaned server gone")


def test_a_process_without_the_key_is_refused_and_the_others_are_still_served(manager):
    counts = manager.dict()
    pickled = pickle.dumps(counts)
    said = refused_to_a_stranger(pickled)
    assert said.startswith("refused:") and "authkey" in said, said
    _run(multiprocessing.get_context("spawn"), manager_tasks.incr_many, counts, "k", 3)
    assert counts["k"] == 3
    assert manager.statistics().refused == 1


def test_after_shutdown_every_proxy_says_so_and_no_process_is_left():
    manager = conveyor.Manager()
    counts = manager.dict()
    manager.shutdown()
    with pytest.raises(ManagerGoneError, match="shut down"):
        counts["k"] = 1
    manager.shutdown()  # twice is harmless


def test_statistics_count_objects_clients_and_requests(manager):
    first = manager.statistics()
    d = manager.dict()
    d["a"] = 1
    _run(multiprocessing.get_context("fork"), manager_tasks.incr_many, d, "a", 2)
    stats = manager.statistics()
    assert stats.objects == first.objects + 1
    assert stats.requests >= first.requests + 5
    assert stats.clients_died >= 1


def test_a_read_modify_write_under_the_keys_lock_loses_no_update(manager):
    counts = manager.dict(n=0)
    ctx = multiprocessing.get_context("fork")
    workers = [
        ctx.Process(target=manager_tasks.locked_read_modify_write, args=(counts, "n", 300))
        for _ in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT_S)
        assert w.exitcode == 0
    assert counts["n"] == 1200


def test_a_keys_lock_held_by_a_killed_process_is_given_back(manager):
    counts = manager.dict(n=0)
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=manager_tasks.lock_key_then_die, args=(counts, "n", ready))
    child.start()
    assert ready.wait(WAIT_S)
    child.join(WAIT_S)
    with counts.lock("n", timeout=WAIT_S):
        counts["n"] = 1
    other = manager.dict()
    with counts.lock("other"), other.lock("other", timeout=0.1):
        pass  # another dict's lock of the same key is another lock
    with counts.lock("other"), pytest.raises(TimeoutError), counts.lock("other", timeout=0.1):
        pass  # the same key's lock, taken twice: the second waits and times out


def test_a_forked_child_is_not_counted_for_proxies_that_died_before_the_fork(manager):
    import gc

    kept = manager.list()
    dropped = manager.list()
    del dropped
    gc.collect()  # its last proxy is gone; its count not given back yet
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=manager_tasks.append_later, args=(kept, 0.3))
    child.start()
    len(kept)  # this request gives the dropped list back: the server frees it
    child.join(WAIT_S)
    assert child.exitcode == 0 and kept[:] == [1]
