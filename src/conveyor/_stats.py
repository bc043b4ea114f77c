"""Frozen snapshots of a pool's counters, returned by ``stats()`` on every pool.

``str()`` of a snapshot is a short report for people; the attributes are for programs.
Times are durations in seconds, and ``started_at`` is wall-clock time (``time.time()``).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerStats:
    """One worker's counters.

    ``busy_s`` is time spent running tasks, measured in the worker; ``uptime_s`` is how
    long the worker has existed; the rest, ``waiting_s``, it spent waiting for work (or
    for the parent to read its results). ``started_at`` is when it started, wall-clock.
    """

    slot: int
    pid: int | None
    alive: bool
    tasks_done: int
    chunks_done: int
    busy_s: float
    started_at: float
    uptime_s: float = 0.0

    @property
    def waiting_s(self) -> float:
        return max(0.0, self.uptime_s - self.busy_s)

    def __str__(self) -> str:
        state = "" if self.alive else ", exited"
        return (
            f"worker {self.slot} (pid {self.pid}{state}): {self.tasks_done:,} tasks in "
            f"{self.chunks_done:,} chunks, busy {self.busy_s:.2f} s of {self.uptime_s:.2f} s"
        )


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool: what ran, what failed, what moved, and how it was chunked.

    ``tasks_done`` counts tasks that ran to completion; ``results_discarded`` counts
    those of them whose results nobody took, because the iterator they were read ahead
    for was closed or dropped first. ``print(stats)`` shows a short report.

    Example::

        s = pool.stats()
        print(s.tasks_done, s.mean_chunk_size, [w.busy_s for w in s.workers])
        print(s)       # the report, one line per topic and per worker
    """

    backend: str
    size: int
    tasks_submitted: int
    tasks_done: int
    tasks_failed: int
    tasks_retried: int
    tasks_cancelled: int
    worker_crashes: int
    task_timeouts: int
    workers_started: int
    workers_recycled: int
    chunks_sent: int
    bytes_sent: int
    bytes_received: int
    last_chunk_size: int
    uptime_s: float
    workers: tuple[WorkerStats, ...] = field(default_factory=tuple)
    results_discarded: int = 0
    started_at: float = 0.0

    @property
    def mean_chunk_size(self) -> float:
        return self.tasks_done / self.chunks_sent if self.chunks_sent else 0.0

    @property
    def busy_fraction(self) -> float:
        """Share of worker-time spent running tasks (1.0: never waiting)."""
        total = self.uptime_s * max(1, self.size)
        return min(1.0, sum(w.busy_s for w in self.workers) / total) if total else 0.0

    def __str__(self) -> str:
        started = datetime.datetime.fromtimestamp(self.started_at).isoformat(" ", "seconds")
        lines = [
            f"{self.backend} pool of {self.size} workers, started {started}, "
            f"up {self.uptime_s:.2f} s",
            f"  tasks: {self.tasks_submitted:,} submitted, {self.tasks_done:,} done"
            + (
                f" ({self.results_discarded:,} of them read ahead, results discarded)"
                if self.results_discarded
                else ""
            )
            + f", {self.tasks_failed:,} failed, {self.tasks_cancelled:,} cancelled, "
            f"{self.tasks_retried:,} retried",
            f"  faults: {_count(self.worker_crashes, 'worker crash', 'worker crashes')}, "
            f"{_count(self.task_timeouts, 'timeout')}; workers: {self.workers_started:,} "
            f"started, {self.workers_recycled:,} recycled",
            f"  chunks: {self.chunks_sent:,} sent, {self.mean_chunk_size:,.1f} tasks each on "
            f"average, the last {self.last_chunk_size:,}; {_size(self.bytes_sent)} sent, "
            f"{_size(self.bytes_received)} received",
            f"  busy: {self.busy_fraction:.0%} of worker time",
        ]
        lines += [f"    {w}" for w in self.workers]
        return "\n".join(lines)


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} GB"  # not reached


@dataclass
class Counters:
    """The engine's live counters (mutated under the engine lock)."""

    tasks_submitted: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    tasks_retried: int = 0
    tasks_cancelled: int = 0
    worker_crashes: int = 0
    task_timeouts: int = 0
    workers_started: int = 0
    workers_recycled: int = 0
    chunks_sent: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    last_chunk_size: int = 0
    results_discarded: int = 0
