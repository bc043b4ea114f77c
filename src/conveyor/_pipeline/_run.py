"""One run of a pipeline: the threads that move items, how it ends, and its report.

Threads of a run: the *reader* pulls the source into the first stage's inbox (never
more than its bound ahead); the *clock* sends part-full batches out on time, hands on
source items read while the pipeline was busy, and is the safety net for a missed
wake-up; each stage's runner reports outcomes from its own threads; the *consumer* (the
caller iterating, or ``run()``) takes the last stage's outputs. Every move happens in
``pump``, under the run's lock, whoever called it.

A run ends one of three ways, each once (``RunState``):

- **finished**: every stage handed everything on and the consumer took it; the pools
  are closed and joined, and the books are checked.
- **failed**: a stage (or the source, or an ``on_error`` handler) raised with
  ``on_error="raise"``; a stop thread stops every stage at once (whatever waits in an
  inbox or runs is cancelled), and the consumer gets the first error, with a note that
  names the stage and the item, and the later ones in notes.
- **cancelled**: the consumer stopped (``close()``, leaving ``with``, a ``break`` and
  the iterator collected, Ctrl-C): the same stop, on the consumer's thread.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any

from ._progress import StageLines
from ._report import (
    MAX_KEPT_FAILURES,
    Failure,
    PipelineReport,
    StageEvent,
    StageStats,
    accounting_problems,
)
from ._spec import StageKind, StageSpec
from ._stage import Stage

_log = logging.getLogger("conveyor")

TICK_S = 0.05  # the clock's period
MAX_SOURCE_BATCH = 4096  # most source items handed on together while the first stage is busy
TAKE_MAX = 4096  # outputs the consumer takes at once
FINISH_JOIN_S = 30.0  # how long an idle stage's workers may take to exit
READER_JOIN_S = 1.0  # a source blocked inside its own next() is not waited for longer
MAX_NOTED_ERRORS = 10  # later errors named in the first one's notes


class RunState(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Run:
    def __init__(
        self,
        source: Iterator[Any],
        specs: tuple[StageSpec, ...],
        *,
        progress: bool = False,
        subscriber: Callable[[StageEvent], object] | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.lock = threading.RLock()
        self._output_ready = threading.Condition(self.lock)
        self._room = threading.Condition(self.lock)
        self._source = source
        self.stages = [Stage(spec, self) for spec in specs]
        self.state = RunState.RUNNING
        self._pending: deque[Any] = deque()  # read from the source, not yet in an inbox
        self.read = 0
        self._source_done = False
        self._pumping = False
        self._again = False
        self.consumed = 0
        self.unread = 0
        self._error: BaseException | None = None
        self._later: list[str] = []
        self._failures: list[Failure] = []
        self._stop_lock = threading.Lock()
        self._stopped = threading.Event()  # the clock stops
        self._ended = threading.Event()  # the run is over and its books are final
        self._errors_out: queue.SimpleQueue[Any] | None = None
        self._errors_thread: threading.Thread | None = None
        self._started_at = time.monotonic()
        self._ended_at: float | None = None
        self._busy: dict[str, float] = {}
        self._threads: list[threading.Thread] = []
        shown = [s.name for s in specs if progress or s.progress]
        self._lines = StageLines(shown) if shown else None

    # --- starting ---------------------------------------------------------------------

    def start(self) -> None:
        started: list[Stage] = []
        try:
            for stage in self.stages:
                stage.start()
                started.append(stage)
        except BaseException:
            for stage in started:
                if stage.runner is not None:
                    stage.runner.stop()
            raise
        if any(callable(s.spec.on_error) for s in self.stages):
            self._errors_out = queue.SimpleQueue()
            self._errors_thread = self._thread(self._route_failures, "errors")
        self._thread(self._read_source, "reader")
        self._thread(self._keep_time, "clock")

    def _thread(self, target: Any, role: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"conveyor-pipeline-{role}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    # --- moving items (run lock held) ---------------------------------------------------

    def pump(self) -> None:
        """Move everything that can move. Re-entered from a runner's report during a
        ``send`` on the same thread, it only asks the outer call to go round again."""
        if self._pumping:
            self._again = True
            return
        if self.state is not RunState.RUNNING:
            return
        self._pumping = True
        try:
            while True:
                self._again = False
                if not (self._pump_once() or self._again) or self.state is not RunState.RUNNING:
                    break
        finally:
            self._pumping = False
        self._room.notify_all()
        self._output_ready.notify_all()

    def _pump_once(self) -> bool:
        stages = self.stages
        first = stages[0]
        moved = self._hand_on_source()
        if self._source_done and not self._pending and not first.input_ended:
            first.input_ended = moved = True
        last = len(stages) - 1
        for k in range(last, -1, -1):
            stage = stages[k]
            if k < last:
                after = stages[k + 1]
                before = stage.window.released
                out = stage.release(after.room())
                if out:
                    after.receive(out)
                moved = moved or stage.window.released != before
                if stage.complete and not after.input_ended:
                    after.input_ended = moved = True
            if stage.admit():
                moved = True
            if stage.end_input_if_due():
                moved = True
        return moved

    def _hand_on_source(self) -> bool:
        pending = self._pending
        n = len(pending)
        if not n:
            return False
        self.stages[0].receive([pending.popleft() for _ in range(n)])
        # Counted as admitted here, under the lock: an item the reader takes from the
        # source as the run stops never enters it, and is in no count.
        self.read += n
        return True

    # --- the source -----------------------------------------------------------------------

    def _read_source(self) -> None:
        pending, first, source = self._pending, self.stages[0], self._source
        gather, read = 1, 0
        try:
            while self.state is RunState.RUNNING:
                if len(pending) + len(first.inbox) >= first.bound() and not self._wait_for_room():
                    return
                try:
                    item = next(source)
                except StopIteration:
                    break
                pending.append(item)
                read += 1
                if len(pending) >= gather or (len(pending) == 1 and first.hungry()):
                    with self.lock:
                        self.pump()
                        gather = max(1, min(MAX_SOURCE_BATCH, first.gather_size()))
        except BaseException as exc:
            self.fail(exc, f"conveyor pipeline: the source raised after {read} items")
            return
        with self.lock:
            self._source_done = True
            self.pump()

    def _wait_for_room(self) -> bool:
        """Wait until the first inbox has room (False: the run is stopping)."""
        first = self.stages[0]
        with self.lock:
            self.pump()
            while self.state is RunState.RUNNING:
                if len(self._pending) + len(first.inbox) < first.bound():
                    return True
                self._room.wait(TICK_S * 4)
        return False

    # --- the clock ---------------------------------------------------------------------

    def _keep_time(self) -> None:
        while not self._stopped.wait(TICK_S):
            with self.lock:
                if self.state is not RunState.RUNNING:
                    return
                now = time.monotonic()
                for stage in self.stages:
                    stage.tick(now)
                self.pump()
            if self._lines is not None:
                self._lines.show(self.stage_stats())

    # --- failures -----------------------------------------------------------------------

    def item_failed(self, stage: Stage, failure: Failure) -> None:
        """A stage's item raised: its ``on_error`` decides (run lock held)."""
        if len(self._failures) < MAX_KEPT_FAILURES:
            self._failures.append(failure)
        policy = stage.spec.on_error
        if policy == "emit":
            return  # it goes on downstream, in the item's place
        if policy == "skip":
            _log.info(
                "conveyor: pipeline %s skipped item %d: %r",
                stage.name,
                failure.index,
                failure.error,
            )
            return
        if policy == "raise":
            self.fail(failure.error, _describe(stage, failure))
            return
        assert self._errors_out is not None
        self._errors_out.put((stage, failure))

    def stage_broke(self, stage: Stage, exc: BaseException) -> None:
        self.fail(exc, f"conveyor pipeline: stage {stage.name} could not go on")

    def fail(self, exc: BaseException, note: str) -> None:
        """The run fails: keep the first error, note the later ones, stop everything."""
        with self.lock:
            if self._error is None and self.state is RunState.RUNNING:
                _add_note(exc, note)
                self._error = exc
                self.state = RunState.STOPPING
                for stage in self.stages:
                    stage.stopped = True
                self._output_ready.notify_all()
                self._room.notify_all()
                threading.Thread(
                    target=self.stop,
                    args=(RunState.FAILED,),
                    name="conveyor-pipeline-stop",
                    daemon=True,
                ).start()
            elif exc is not self._error:
                self._later.append(f"{note}: {type(exc).__name__}: {exc}")

    def _route_failures(self) -> None:
        assert self._errors_out is not None
        while True:
            entry = self._errors_out.get()
            if entry is None:
                return
            stage, failure = entry
            try:
                stage.spec.on_error(failure)
            except BaseException as exc:
                self.fail(
                    exc, f"conveyor pipeline: the on_error handler of stage {stage.name} raised"
                )

    # --- the consumer ------------------------------------------------------------------

    def outputs(self) -> Generator[Any, None, None]:
        """The last stage's outputs, as they come; closing it early cancels the run."""
        batch: list[Any] = []
        position = 0
        try:
            while True:
                batch = self._take()
                if not batch:
                    return
                for position, value in enumerate(batch, 1):  # noqa: B007 (read in finally)
                    yield value
                batch = []
        finally:
            if self.state is not RunState.FINISHED:
                self.unread = len(batch) - position if batch else 0
                self.consumed -= self.unread
                self.stop(RunState.CANCELLED)

    def _take(self) -> list[Any]:
        last = self.stages[-1]
        with self.lock:
            while True:
                state = self.state
                if state is RunState.RUNNING:
                    before = last.window.released
                    out = last.release(TAKE_MAX)
                    if last.window.released != before:
                        self.consumed += len(out)
                        self.pump()
                        if out:
                            return out
                        continue
                    if last.complete and all(s.complete for s in self.stages):
                        break
                    self._output_ready.wait(TICK_S * 4)
                elif state is RunState.STOPPING:
                    self._output_ready.wait(TICK_S * 4)
                elif state is RunState.FAILED:
                    self.raise_if_failed()
                else:
                    return []
        self._finish()
        return []

    # --- ending -------------------------------------------------------------------------

    def _finish(self) -> None:
        """Everything was handed on: let the workers go, drain the error handler, check
        the books."""
        for stage in self.stages:
            if stage.runner is not None:
                self._busy[stage.name] = stage.runner.busy_s()
                stage.runner.finish(FINISH_JOIN_S)
        if self._errors_thread is not None and self._errors_out is not None:
            self._errors_out.put(None)
            self._errors_thread.join()
        with self.lock:
            if self.state is RunState.RUNNING:
                self.state = RunState.FINISHED
                self._ended_at = time.monotonic()
                self._ended.set()
        self._stopped.set()
        self._ended.wait()  # an error handler that raised just now: its stop thread
        self._close_lines()
        self.raise_if_failed()
        self.report().check()

    def stop(self, outcome: RunState) -> None:
        """Stop every stage now and count what was left; once, whoever asks first."""
        with self._stop_lock:
            if self._ended_at is not None:
                return
            with self.lock:
                if self.state is RunState.RUNNING:
                    self.state = RunState.STOPPING
                for stage in self.stages:
                    stage.stopped = True
                self._output_ready.notify_all()
                self._room.notify_all()
            self._stopped.set()
            for stage in self.stages:
                if stage.runner is not None:
                    self._busy[stage.name] = stage.runner.busy_s()
                    stage.runner.stop()
            if self._errors_thread is not None and self._errors_out is not None:
                self._errors_out.put(None)
                self._errors_thread.join(FINISH_JOIN_S)
            with self.lock:
                first = self.stages[0]
                left = len(self._pending)
                self._pending.clear()
                self.read += left
                first.received += left
                first.cancelled += left
                for stage in self.stages:
                    stage.settle_cancelled()
                self.state = RunState.FAILED if self._error is not None else outcome
                self._ended_at = time.monotonic()
                self._ended.set()
                self._output_ready.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(READER_JOIN_S)
        self._close_lines()
        problems = self._problems()
        if problems:
            _log.error("conveyor: pipeline accounting broken: %s", "; ".join(problems))

    def _close_lines(self) -> None:
        lines, self._lines = self._lines, None
        if lines is not None:
            lines.close(self.stage_stats())

    def raise_if_failed(self) -> None:
        """After a stop, the error that failed the run, with the later ones noted."""
        if self._error is None:
            return
        if self._later:
            shown = self._later[:MAX_NOTED_ERRORS]
            more = len(self._later) - len(shown)
            tail = f"; and {more} more" if more else ""
            _add_note(self._error, f"later errors ({len(self._later)}): {'; '.join(shown)}{tail}")
            self._later = []
        raise self._error

    def _problems(self) -> list[str]:
        stats = tuple(s.stats(self._busy.get(s.name)) for s in self.stages)
        return accounting_problems(self.read, stats, self.consumed + self.unread)

    # --- statistics ---------------------------------------------------------------------

    def stage_stats(self) -> tuple[StageStats, ...]:
        with self.lock:
            return tuple(s.stats(self._busy.get(s.name)) for s in self.stages)

    def report(self) -> PipelineReport:
        with self.lock:
            stages = tuple(s.stats(self._busy.get(s.name)) for s in self.stages)
            end = self._ended_at if self._ended_at is not None else time.monotonic()
            state = self.state
            last = self.stages[-1]
            # What an ``each`` consumed counts as emitted (it hands nothing on).
            sunk = last.window.emitted if last.spec.kind is StageKind.EACH else 0
            return PipelineReport(
                admitted=self.read,
                emitted=self.consumed + sunk,
                filtered=sum(s.filtered for s in stages),
                failed=sum(s.failed for s in stages),
                cancelled=sum(s.cancelled for s in stages) + self.unread,
                stages=stages,
                elapsed_s=end - self._started_at,
                outcome=state.value,
                unread=self.unread,
                failures=tuple(self._failures),
            )


def _describe(stage: Stage, failure: Failure) -> str:
    item = repr(failure.item)
    if len(item) > 200:
        item = item[:197] + "..."
    return (
        f"conveyor pipeline: stage {stage.name} failed on item {failure.index} of its input: {item}"
    )


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # Python 3.10: kept where 3.11's traceback would print it
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]


__all__ = ["Run", "RunState"]
