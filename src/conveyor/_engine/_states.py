"""The states of the engine and of each worker slot, and why a worker ended.

Every decision the engine makes reads these; nothing else holds state about a worker.
``classify_exit`` is the one place that turns what is known when a worker is gone (who
killed it and why, whether it announced its exit, whether it ever became ready, its exit
code) into an ``ExitCause``; ``_recovery.py`` then says what each cause costs.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._contract import WorkerHandle
    from ._jobs import Chunk


class EngineState(enum.Enum):
    RUNNING = "running"
    CLOSING = "closing"  # no new work; finishing what was submitted
    STOPPING = "stopping"  # all work done; workers told to exit
    TERMINATED = "terminated"
    BROKEN = "broken"  # workers cannot start (failing initializer)

    @property
    def accepting(self) -> bool:
        """Work still runs: submitted tasks are sent, dead workers are replaced."""
        return self in (EngineState.RUNNING, EngineState.CLOSING)


class SlotState(enum.Enum):
    STARTING = "starting"  # started; its initializer may still be running
    READY = "ready"
    RETIRING = "retiring"  # takes no new work; exits after what it holds
    DEAD = "dead"


class KillReason(enum.Enum):
    """Why the engine itself stopped a worker."""

    TIMEOUT = "timeout"
    CANCEL = "cancel"
    TERMINATE = "terminate"


class ExitCause(enum.Enum):
    """Why a worker ended, as far as its cost goes."""

    STOPPED = "stopped"  # it was told to stop, or used up its task budget, holding nothing
    RETIRED = "retired"  # it announced its exit (memory limit): what it holds never started
    FAILED_TO_START = "failed to start"  # it died before it was ready, and nobody killed it
    TIMED_OUT = "timed out"  # killed because its task overran its timeout
    CANCELLED = "cancelled"  # killed because its task was cancelled while it ran
    TERMINATED = "terminated"  # killed because the pool was terminated
    CRASHED = "crashed"  # it died on its own holding work: a crash, an OOM kill, os._exit


class Slot:
    """The engine's record of one worker: what it holds, and its counters.

    A backend reads only ``index`` (to name the worker); the rest is the engine's.
    """

    def __init__(self, index: int, budget: int | None) -> None:
        self.index = index
        self.handle: WorkerHandle | None = None
        self.state = SlotState.STARTING
        self.inflight: deque[Chunk] = deque()  # the first one is running
        self.budget = budget  # tasks it may still be given (max_tasks_per_child)
        self.kill_reason: KillReason | None = None
        self.retired_itself = False  # announced its exit; what it holds never started
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        self.tasks_done = 0
        self.chunks_done = 0
        self.busy_s = 0.0

    @property
    def takes_work(self) -> bool:
        return self.state in (SlotState.STARTING, SlotState.READY) and self.budget != 0

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle is not None else None

    def kill(self, reason: KillReason) -> None:
        """Stop this worker now; ``reason`` decides what its running task costs."""
        if self.handle is not None and self.state is not SlotState.DEAD:
            self.kill_reason = reason
            self.handle.kill()

    def clear(self) -> list[Chunk]:
        """The worker is gone: take what it held."""
        held = list(self.inflight)
        self.inflight.clear()
        self.state = SlotState.DEAD
        return held


def classify_exit(slot: Slot, exitcode: int | None) -> ExitCause:
    """Why the worker of ``slot`` ended (call before ``slot.clear()``)."""
    reason = slot.kill_reason
    if reason is KillReason.TERMINATE:
        return ExitCause.TERMINATED
    if reason is KillReason.TIMEOUT:
        return ExitCause.TIMED_OUT
    if reason is KillReason.CANCEL:
        return ExitCause.CANCELLED
    if slot.retired_itself:
        return ExitCause.RETIRED
    if slot.state is SlotState.STARTING:
        return ExitCause.FAILED_TO_START
    if exitcode == 0 and not slot.inflight:
        return ExitCause.STOPPED
    return ExitCause.CRASHED


__all__ = ["EngineState", "ExitCause", "KillReason", "Slot", "SlotState", "classify_exit"]
