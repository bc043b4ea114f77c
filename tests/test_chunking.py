"""Chunk sizing: big chunks for tiny tasks, a shrinking tail, and a floor under the tail."""

from __future__ import annotations

import pytest

from conveyor._engine._chunking import MIN_CHUNK_S, TARGET_CHUNK_S, ChunkSizer


def chunks_for(items: int, workers: int, item_s: float) -> list[int]:
    sizer = ChunkSizer(None, workers)
    sizer.observe(1000, 1000 * item_s, 8000)
    sizes, remaining = [], items
    while remaining > 0:
        size = min(sizer.size(remaining), remaining)
        sizes.append(size)
        remaining -= size
    return sizes


@pytest.mark.parametrize("workers", [2, 8, 32, 128])
def test_a_million_tiny_tasks_take_few_chunks_whatever_the_worker_count(workers):
    sizes = chunks_for(1_000_000, workers, item_s=50e-9)
    # Guided chunking alone would shrink the tail to single tasks: W * log(N) chunks.
    assert len(sizes) < 12 * workers
    assert min(sizes[:-1]) * 50e-9 >= MIN_CHUNK_S * 0.99  # the floor holds until the end
    assert max(sizes) * 50e-9 <= TARGET_CHUNK_S * 1.01


def test_the_tail_still_shrinks_for_slow_tasks():
    sizes = chunks_for(400, 4, item_s=0.005)  # 5 ms tasks: the floor is one task
    assert sizes[0] == 2 and sizes[-1] == 1


def test_no_measurement_means_a_one_task_probe():
    assert ChunkSizer(None, 4).size(1000) == 1
    assert ChunkSizer(7, 4).size(1000) == 7  # a chunksize given is honoured as given
