"""Per-task timeouts: which running tasks are overdue, and when the next one will be.

A task's clock starts when its worker starts it: when the chunk is sent to an idle
worker, or when the worker finishes the chunk before it. A chunk of several tasks gets
slack for its other tasks (``Chunk.expected_s``); one that overruns it is split by
recovery, and its tasks re-run alone, each held to the exact timeout.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._states import Slot


def overdue(slots: Iterable[Slot], now: float) -> tuple[list[Slot], float | None]:
    """The slots whose running task is past its deadline, and the next deadline of the rest."""
    late: list[Slot] = []
    next_deadline: float | None = None
    for slot in slots:
        if not slot.inflight or slot.kill_reason is not None:
            continue
        chunk = slot.inflight[0]
        timeout = chunk.job.options.timeout
        if timeout is None or chunk.started_at is None:
            continue
        deadline = chunk.started_at + timeout + chunk.expected_s
        if deadline <= now:
            late.append(slot)
        elif next_deadline is None or deadline < next_deadline:
            next_deadline = deadline
    return late, next_deadline


__all__ = ["overdue"]
