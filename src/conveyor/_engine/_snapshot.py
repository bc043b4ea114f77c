"""``statistics()``: a frozen snapshot of the engine's counters and of every worker."""

from __future__ import annotations

import time
from collections.abc import Sequence

from .._stats import Counters, PoolStats, WorkerStats
from ._states import Slot, SlotState


def snapshot(
    backend: str,
    size: int,
    counters: Counters,
    slots: Sequence[Slot],
    created: float,
    created_wall: float,
) -> PoolStats:
    """Read under the engine lock: every figure is from the same instant."""
    now = time.monotonic()
    c = counters
    workers = tuple(
        WorkerStats(
            slot=s.index,
            pid=s.pid,
            alive=s.state is not SlotState.DEAD,
            tasks_done=s.tasks_done,
            chunks_done=s.chunks_done,
            busy_s=s.busy_s,
            started_at=s.started_wall,
            uptime_s=now - s.started_at,
        )
        for s in slots
    )
    return PoolStats(
        backend=backend,
        size=size,
        tasks_submitted=c.tasks_submitted,
        tasks_done=c.tasks_done,
        tasks_failed=c.tasks_failed,
        tasks_retried=c.tasks_retried,
        tasks_cancelled=c.tasks_cancelled,
        worker_crashes=c.worker_crashes,
        task_timeouts=c.task_timeouts,
        workers_started=c.workers_started,
        workers_recycled=c.workers_recycled,
        chunks_sent=c.chunks_sent,
        bytes_sent=c.bytes_sent,
        bytes_received=c.bytes_received,
        last_chunk_size=c.last_chunk_size,
        uptime_s=now - created,
        workers=workers,
        results_discarded=c.results_discarded,
        started_at=created_wall,
    )


__all__ = ["snapshot"]
