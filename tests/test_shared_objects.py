"""WorkerPool(shared=...): one read-only object for every worker, its buffers in shared
memory once for the machine, under every start method."""

from __future__ import annotations

import numpy as np
import pytest

import conveyor
import shared_tasks

METHODS = ["fork", "spawn", "forkserver"]


def _table():
    return {"weights": np.arange(300_000, dtype=np.float64), "name": "model-7"}  # 2.4 MB


@pytest.mark.parametrize("method", METHODS)
def test_every_worker_reads_the_shared_object_under_every_start_method(method):
    with conveyor.WorkerPool(2, context=method, shared=_table()) as pool:
        results = pool.map(shared_tasks.read_shared, [0, 1, 299_999])
    assert [r[:2] for r in results] == [(0.0, "model-7"), (1.0, "model-7"), (299_999.0, "model-7")]


def test_the_shared_arrays_are_read_only_in_the_workers():
    with conveyor.WorkerPool(1, shared=_table()) as pool:
        said = pool.map(shared_tasks.try_to_write, [0])[0]
    assert said.startswith("refused:") and "read-only" in said


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_the_buffers_are_one_copy_for_the_machine_not_one_per_worker(method):
    # Every worker maps the same memfd (same inode): the parent's, not a copy of its own.
    with conveyor.WorkerPool(2, context=method, shared=_table()) as pool:
        seen = pool.map(shared_tasks.mapped_memfds, range(8), chunksize=1)
    inodes = {inode for worker in seen for inode in worker}
    assert len(inodes) == 1, seen


def test_it_is_unpickled_once_per_worker():
    with conveyor.WorkerPool(2, shared=_table()) as pool:
        seen = pool.map(shared_tasks.identity_of_shared, range(20), chunksize=1)
    by_pid: dict[int, set[int]] = {}
    for ident, pid in seen:
        by_pid.setdefault(pid, set()).add(ident)
    assert all(len(idents) == 1 for idents in by_pid.values())


def test_a_thread_pool_shares_the_object_itself():
    table = _table()
    with conveyor.WorkerPool(2, backend="thread", shared=table) as pool:
        assert pool.map(lambda _: conveyor.shared() is table, range(4)) == [True] * 4


def test_outside_a_pool_with_a_shared_object_it_is_a_clear_error():
    with pytest.raises(LookupError, match="shared="):
        conveyor.shared()
    with conveyor.WorkerPool(1) as pool, pytest.raises(LookupError, match="shared="):
        pool.submit(conveyor.shared).result()


def test_an_object_that_cannot_be_pickled_is_refused_when_the_pool_is_made():
    import threading

    with pytest.raises(TypeError, match="cannot share a lock"):
        conveyor.WorkerPool(1, shared=threading.Lock())


def _memfds_open_here():
    import os

    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:"):
                fds.append(name)
        except OSError:
            continue
    return len(fds)


def test_its_memory_is_let_go_when_the_pool_ends():
    before = _memfds_open_here()
    with conveyor.WorkerPool(2, context="spawn", shared=_table()) as pool:
        assert _memfds_open_here() == before + 1  # the table's one buffer
        pool.map(shared_tasks.read_shared, [0, 1])
    assert _memfds_open_here() == before
