"""Large buffers travel through shared memory (memfd), and nothing leaks, whatever dies."""

from __future__ import annotations

import os

import numpy as np
import pytest

import conveyor
import tasks
from conveyor import _shm

pytestmark = pytest.mark.skipif(not _shm.AVAILABLE, reason="memfd and SCM_RIGHTS are Linux-only")

BIG = 2 * _shm.OOB_MIN_BYTES // 8  # float64 items: 2 MiB arrays, over the threshold


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def test_arrays_cross_both_ways_intact_and_bytes_skip_the_socket():
    arrays = [np.arange(BIG, dtype=np.float64) + i for i in range(6)]
    with conveyor.Pool(2) as pool:
        sums = pool.map(tasks.array_sum, arrays)
        doubled = pool.map(tasks.array_double, arrays)
        stats = pool.stats()
    assert sums == [float(a.sum()) for a in arrays]
    assert all(np.array_equal(d, a * 2) for d, a in zip(doubled, arrays, strict=True))
    # 12 arrays of 2 MiB went out and 6 came back, yet the socket carried little of that.
    assert stats.bytes_sent >= 12 * 2 * 2**20
    assert stats.bytes_received < 2**20


def test_small_buffers_stay_in_the_pickle():
    oob = _shm.OutOfBand()
    import pickle

    pickle.dumps(np.zeros(16), 5, buffer_callback=oob)
    assert oob.fds == []


def test_no_descriptor_or_named_segment_leaks_over_many_transfers():
    before_shm = shm_entries()
    with conveyor.Pool(2) as pool:
        pool.map(tasks.array_double, [np.ones(BIG)] * 4)  # warm up
        fds_before = open_fds()
        for _ in range(5):
            pool.map(tasks.array_double, [np.ones(BIG)] * 8)
        assert open_fds() <= fds_before + 2
    assert shm_entries() == before_shm  # memfds have no names: nothing to clean up


def test_a_worker_dying_with_shared_buffers_in_flight_leaks_nothing():
    before_shm = shm_entries()
    with conveyor.Pool(2) as pool:
        pool.map(tasks.array_sum, [np.ones(BIG)] * 2)
        fds_before = open_fds()
        res = pool.map_async(tasks.array_first_then_die, [np.ones(BIG)] * 4, chunksize=2)
        with pytest.raises(conveyor.WorkerCrashedError):
            res.get(timeout=30)
        assert pool.map(tasks.array_sum, [np.ones(BIG)]) == [float(BIG)]
        assert open_fds() <= fds_before + 2
    assert shm_entries() == before_shm


def test_thread_pools_pass_arrays_by_reference():
    a = np.ones(BIG)
    with conveyor.ThreadPool(2) as pool:
        assert pool.apply(tasks.identity, (a,)) is a
