"""One stage's books, in the parent: what waits in front of it, what is in flight in it,
what it finished, and in which order it hands that on.

Every method runs under the run's lock (an ``RLock``: a runner may report an outcome
from inside ``send``, on the same thread). The ``Outcomes`` methods take it themselves,
as they are called from the runners' threads.

An item's life in stage k: it waits in ``inbox`` (at most ``bound`` items), is
*admitted* (numbered, kept in the ``Window``, sent to the runner) while fewer than the
runner's ``capacity`` are in flight, finishes, and is *released* in input order (or,
with ``ordered=False``, in the order it finished) once the next stage's inbox has room
for its outputs. In flight means admitted and not released, so finished items held for
order count against the capacity, which is what bounds the reorder buffer.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import TaskCancelledError
from ._calls import EachCall, FilterCall, FlatMapCall
from ._grouped import GroupedRunner
from ._report import Failure, StageStats
from ._runners import AsyncRunner, EngineRunner, Runner
from ._spec import ITEMS_PER_WORKER, StageKind, StageSpec
from ._window import Window

if TYPE_CHECKING:
    from ._run import Run


class Stage:
    def __init__(self, spec: StageSpec, run: Run) -> None:
        self.spec = spec
        self.name = spec.name
        self._run = run
        self._ordered = spec.ordered
        self.inbox: deque[Any] = deque()
        self.received = 0
        self.cancelled = 0
        self.window = Window(spec.kind, spec.ordered, emit_failures=spec.on_error == "emit")
        self.input_ended = False  # nothing more will arrive in the inbox
        self._input_closed = False  # ... and the runner was told so
        self.runner_closed = False  # every admitted item has its result
        self.stopped = False  # the run is stopping: outcomes are no longer awaited
        self.settled = False  # ... and has counted what had none: later ones are ignored
        self._batch: list[Any] = []
        self._batch_first = 0  # the index of its first item
        self._batch_due: float | None = None
        self.blocked_s = 0.0
        self._blocked_since: float | None = None
        self.runner: Runner | None = None

    def start(self) -> None:
        """Start the stage's workers (a batch stage has none)."""
        spec = self.spec
        if spec.kind is StageKind.BATCH:
            return
        if spec.backend == "async":
            self.runner = AsyncRunner(spec, self)
        elif spec.concurrency is not None:
            self.runner = GroupedRunner(spec, self, self._run.subscriber)
        else:
            self.runner = EngineRunner(spec, _worker_call(spec), self, self._run.subscriber)

    # --- sizes ------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self.window.in_flight

    def capacity(self) -> int:
        if self.runner is None:
            return 2 * self.spec.size  # one batch forming, one waiting to be handed on
        return self.runner.capacity()

    def bound(self) -> int:
        """How many items may wait in the inbox."""
        if self.spec.maxsize is not None:
            return self.spec.maxsize
        if self.runner is None:
            return self.spec.size
        return max(ITEMS_PER_WORKER * self.runner.workers, self.capacity() // 2)

    def max_bound(self) -> int:
        if self.spec.maxsize is not None:
            return self.spec.maxsize
        if self.runner is None:
            return self.spec.size
        return max(ITEMS_PER_WORKER * self.runner.workers, self.max_capacity() // 2)

    def max_capacity(self) -> int:
        return self.runner.max_capacity() if self.runner is not None else 2 * self.spec.size

    def hungry(self) -> bool:
        """Its workers may be idle: an item that arrives now should go at once."""
        runner = self.runner
        return not self.inbox and (runner is None or self.window.in_flight < runner.workers)

    def gather_size(self) -> int:
        """How many items are worth gathering before handing them to it."""
        return self.runner.chunk_size() if self.runner is not None else self.spec.size

    def room(self) -> int:
        return self.bound() - len(self.inbox)

    @property
    def complete(self) -> bool:
        """Its input ended and every item it received was handed on."""
        return self.runner_closed and self.window.in_flight == 0 and not self.inbox

    # --- the pump's side (run lock held) -------------------------------------------------

    def receive(self, items: Sequence[Any]) -> None:
        self.inbox.extend(items)
        self.received += len(items)

    def admit(self) -> bool:
        """Send what the capacity allows from the inbox; True if anything moved."""
        inbox, in_flight, runner = self.inbox, self.window.in_flight, self.runner
        n = min(len(inbox), self.capacity() - in_flight)
        if n <= 0:
            return False
        # Like Nagle's algorithm: while the workers have something in hand, wait to send
        # a whole chunk; items that would go alone cost a round trip each.
        if (
            runner is not None
            and not self.input_ended
            and n < runner.chunk_size()
            and in_flight >= runner.workers
        ):
            return False
        if n == len(inbox):
            batch = list(inbox)
            inbox.clear()
        else:
            batch = [inbox.popleft() for _ in range(n)]
        first = self.window.admitted
        self.window.admit(batch)
        if self.runner is None:
            self._add_to_batch(first, batch)
        else:
            self.runner.send(batch)  # may report outcomes at once, on this thread
        return True

    def end_input_if_due(self) -> bool:
        """Tell the runner the input ended, once it has and the inbox is empty."""
        if self._input_closed or not self.input_ended or self.inbox:
            return False
        self._input_closed = True
        if self.runner is None:
            self._flush_batch()
            self.runner_closed = True
        else:
            self.runner.end_input(self.window.admitted)
        return True

    def release(self, room: int) -> list[Any]:
        """Hand on finished items, in order, while their outputs fit in ``room``."""
        window = self.window
        out = window.release(room)
        if window.has_finished():
            if self._blocked_since is None:
                self._blocked_since = time.monotonic()
        elif self._blocked_since is not None:
            self._end_blocked()
        return out

    def tick(self, now: float) -> bool:
        """A batch that waited ``max_wait`` goes out part full; True if one did."""
        if self._batch_due is not None and now >= self._batch_due:
            self._flush_batch()
            return True
        return False

    def next_due(self) -> float | None:
        return self._batch_due

    # --- outcomes (from the runner's thread) ----------------------------------------------

    def on_finished(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        with self._run.lock:
            if self.stopped:
                return
            self.window.finish(indices, values, time.monotonic())
            self._run.pump()

    def on_failed(self, index: int, exc: BaseException) -> None:
        with self._run.lock:
            if self.stopped and isinstance(exc, TaskCancelledError):
                return  # stopped by the run itself: counted cancelled when it settles
            if self.settled:
                self._run.item_failed(self, Failure(self.name, index, None, exc))
                return
            failure = self.window.fail(index, exc, time.monotonic(), self.name)
            self._run.item_failed(self, failure)
            if not self.stopped:
                self._run.pump()

    def on_closed(self) -> None:
        with self._run.lock:
            self.runner_closed = True
            if not self.stopped:
                self._run.pump()

    def on_broken(self, exc: BaseException) -> None:
        with self._run.lock:
            if not self.stopped:
                self._run.stage_broke(self, exc)

    # --- stopping -------------------------------------------------------------------------

    def settle_cancelled(self) -> None:
        """The run stopped: whatever has no fate yet is cancelled (a late failure, failed)."""
        if self.settled:
            return
        self.settled = self.stopped = True
        _, cancelled = self.window.settle()
        self.cancelled += cancelled + len(self.inbox)
        self.inbox.clear()
        self._batch.clear()
        self._end_blocked()

    def stats(self, busy_s: float | None = None) -> StageStats:
        runner, window = self.runner, self.window
        blocked = self.blocked_s
        if self._blocked_since is not None:
            blocked += time.monotonic() - self._blocked_since
        return StageStats(
            name=self.name,
            backend=self.spec.backend if runner is not None else "parent",
            workers=runner.workers if runner is not None else 0,
            received=self.received,
            emitted=window.emitted,
            filtered=window.filtered,
            failed=window.failed,
            cancelled=self.cancelled,
            outputs=window.outputs,
            in_flight=window.in_flight,
            depth=len(self.inbox),
            bound=self.bound(),
            capacity=self.capacity(),
            blocked_s=blocked,
            head_of_line_s=window.head_of_line_s,
            head_of_line_peak=window.head_of_line_peak,
            busy_s=busy_s if busy_s is not None else (runner.busy_s() if runner else 0.0),
            limiter_waits=runner.limiter_waits() if runner is not None else 0,
        )

    # --- internals ----------------------------------------------------------------------

    def _end_blocked(self) -> None:
        if self._blocked_since is not None:
            self.blocked_s += time.monotonic() - self._blocked_since
            self._blocked_since = None

    def _add_to_batch(self, first: int, items: list[Any]) -> None:
        """Items ``first``.. join the batch forming; each full one goes out."""
        size = self.spec.size
        for index, item in enumerate(items, first):
            if not self._batch:
                self._batch_first = index
                if self.spec.max_wait is not None:
                    self._batch_due = time.monotonic() + self.spec.max_wait
            self._batch.append(item)
            if len(self._batch) == size:
                self._flush_batch()  # a new list: the one handed on is never touched again

    def _flush_batch(self) -> None:
        batch, self._batch, self._batch_due = self._batch, [], None
        if batch:
            self.window.finish_batch(self._batch_first, batch, time.monotonic())


def _worker_call(spec: StageSpec) -> Callable[..., Any]:
    fn = spec.fn
    assert fn is not None
    if spec.kind is StageKind.MAP:
        return fn
    if spec.kind is StageKind.FILTER:
        return FilterCall(fn)
    if spec.kind is StageKind.FLAT_MAP:
        return FlatMapCall(fn)
    return EachCall(fn)


__all__ = ["Stage"]
