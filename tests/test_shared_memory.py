"""Large buffers travel through shared memory (memfd), and nothing leaks, whatever dies."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import conveyor
import tasks
from conveyor._transport import _shm

pytestmark = pytest.mark.skipif(not _shm.AVAILABLE, reason="memfd and SCM_RIGHTS are Linux-only")

BIG = 2 * _shm.OOB_MIN_BYTES // 8  # float64 items: 2 MiB arrays, over the threshold


def memfds_held() -> int:
    """Shared-memory segments this process holds a descriptor of."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:conveyor-buffer")
        except OSError:
            pass  # closed while we looked (the listing's own descriptor, for one)
    return count


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


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
        for _ in range(5):
            pool.map(tasks.array_double, [np.ones(BIG)] * 8)
        # The parent keeps finished argument segments for reuse, within a fixed budget.
        assert memfds_held() * BIG * 8 <= _shm.MAX_CACHED_BYTES
    assert wait_until(lambda: memfds_held() == 0)
    # memfds have no names: nothing to clean up. Only what appeared counts: /dev/shm is
    # the machine's, and other programs' entries come and go meanwhile.
    assert shm_entries() - before_shm == set()


def test_a_worker_dying_with_shared_buffers_in_flight_leaks_nothing():
    before_shm = shm_entries()
    with conveyor.Pool(2) as pool:
        pool.map(tasks.array_sum, [np.ones(BIG)] * 2)
        res = pool.map_async(tasks.array_first_then_die, [np.ones(BIG)] * 4, chunksize=2)
        with pytest.raises(conveyor.WorkerCrashedError):
            res.get(timeout=30)
        assert pool.map(tasks.array_sum, [np.ones(BIG)]) == [float(BIG)]
        held_while_open = memfds_held()
    assert held_while_open <= 6  # the cache, not one per transfer
    assert wait_until(lambda: memfds_held() == 0)
    assert shm_entries() == before_shm


def _segments(pool):
    return pool._core.engine.backend.segments  # the parent's cache of argument memory


def test_argument_memory_is_reused_once_the_worker_lets_go_of_it():
    arrays = [np.full(BIG, float(i)) for i in range(20)]
    with conveyor.Pool(2) as pool:
        assert pool.map(tasks.array_sum, arrays, chunksize=1) == [float(a.sum()) for a in arrays]
        cache = _segments(pool)
        # At most a few chunks are in flight at once; everything else reused their memory.
        assert cache.created <= 6
        assert cache.reused >= 14


def test_an_argument_a_task_keeps_is_never_overwritten_by_later_arguments():
    arrays = [np.full(BIG, float(i)) for i in range(12)]
    with conveyor.Pool(1) as pool:
        kept_intact = pool.map(tasks.keep_array_and_check_all_kept, arrays, chunksize=1)
        assert kept_intact == [True] * len(arrays)
        assert _segments(pool).reused == 0  # each segment was still held when it came back


def test_thread_pools_pass_arrays_by_reference():
    a = np.ones(BIG)
    with conveyor.ThreadPool(2) as pool:
        assert pool.apply(tasks.identity, (a,)) is a


BIG_RESULT_PROGRAM = """
import sys
import conveyor

SIZE = 300_000_000


def make(n):
    return b"x" * n


def peak_rss(_=None):
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024


if __name__ == "__main__":
    base = peak_rss()
    with conveyor.WorkerPool(1) as pool:
        assert len(pool.submit(make, SIZE).result(timeout=60)) == SIZE
    print((peak_rss() - base) / SIZE)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_a_large_bytes_result_costs_the_parent_at_most_twice_its_size(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "big_result.py"
    script.write_text(BIG_RESULT_PROGRAM)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    # The frame it arrived in and the bytes object made from it; no third copy.
    assert float(done.stdout) < 2.2
