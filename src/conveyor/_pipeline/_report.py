"""What a pipeline reports: per stage counts and waits, the run's totals, its failures.

The counts obey one identity per stage, checked at the end of every run:
``received == emitted + filtered + failed + cancelled``, where a stage *emits* an input
when it hands on what the input became (one value for ``map``, the kept item for
``filter``, the children of ``flat_map``, a batch, or nothing for ``each``), and
``outputs`` counts what it handed on. What stage k outputs, stage k+1 receives; what
the last stage outputs, the consumer got.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._engine._events import Event
from ..errors import PipelineAccountingError


@dataclass(frozen=True)
class Failure:
    """An item a stage failed on: given to an ``on_error`` callable, kept in the report.

    ``index`` is the item's position in the stage's input (0-based).
    """

    stage: str
    index: int
    item: Any
    error: BaseException


@dataclass(frozen=True)
class StageEvent:
    """A task event of one stage's pool (``Pipeline(source, subscriber=fn)``): ``stage``
    names the stage, ``event`` is the pool's own ``TaskEvent``, ``WorkerEvent`` or
    ``JobEvent``."""

    stage: str
    event: Event


@dataclass(frozen=True)
class StageStats:
    """One stage, counted. Seconds are wall-clock totals since the stage started.

    ``depth``: items waiting in front of the stage now; ``bound``: the most that may.
    ``blocked_s``: time the stage held finished items because the next stage's bound was
    full (backpressure). ``head_of_line_s``: item-seconds finished items waited for an
    earlier one, in order (``ordered=False`` removes it); ``head_of_line_peak``: the
    most that waited at once. ``busy_s``: worker time spent running the stage's function
    (for an async stage, coroutine time). ``limiter_waits``: times the limiter said "not
    yet" before a dispatch.
    """

    name: str
    backend: str
    workers: int
    received: int
    emitted: int
    filtered: int
    failed: int
    cancelled: int
    outputs: int
    in_flight: int
    depth: int
    bound: int
    capacity: int
    blocked_s: float
    head_of_line_s: float
    head_of_line_peak: int
    busy_s: float
    limiter_waits: int

    @property
    def settled(self) -> int:
        return self.emitted + self.filtered + self.failed + self.cancelled

    def __str__(self) -> str:
        return (
            f"{self.name:<28} in {self.received:>9,} out {self.outputs:>9,} "
            f"filtered {self.filtered:>7,} failed {self.failed:>5,} cancelled "
            f"{self.cancelled:>7,} | queue {self.depth}/{self.bound} blocked "
            f"{self.blocked_s:.2f}s hol {self.head_of_line_s:.2f}s busy {self.busy_s:.2f}s"
        )


@dataclass(frozen=True)
class PipelineReport:
    """A finished run: its totals, each stage's, and the failures it recorded.

    ``admitted``: items read from the source. ``emitted``: items the consumer got
    (what ``.each`` consumed counts as emitted). ``filtered``, ``failed``,
    ``cancelled``: summed over the stages. Without ``flat_map`` or ``batch`` (which
    change how many items there are), ``admitted == emitted + filtered + failed +
    cancelled``. ``failures`` keeps the first ``MAX_KEPT_FAILURES`` of them.

    Example::

        report = Pipeline(urls).map(fetch, backend="thread", on_error="skip").run()
        print(report.emitted, report.failed, report.failures[:3])
        print(report)       # one line per stage
    """

    admitted: int
    emitted: int
    filtered: int
    failed: int
    cancelled: int
    stages: tuple[StageStats, ...]
    elapsed_s: float
    outcome: str  # "finished", "failed", "cancelled"
    unread: int = 0  # outputs handed to the consumer that it never read (in cancelled)
    failures: tuple[Failure, ...] = field(default_factory=tuple)

    def check(self) -> None:
        """Raise ``PipelineAccountingError`` unless every item is accounted for."""
        sunk = self.stages[-1].emitted if self.stages and self.stages[-1].outputs == 0 else 0
        taken = self.emitted - sunk + self.unread
        problems = accounting_problems(self.admitted, self.stages, taken)
        if problems:
            raise PipelineAccountingError("; ".join(problems))

    def __str__(self) -> str:
        head = (
            f"pipeline {self.outcome} in {self.elapsed_s:.2f}s: admitted {self.admitted:,}, "
            f"emitted {self.emitted:,}, filtered {self.filtered:,}, failed {self.failed:,}, "
            f"cancelled {self.cancelled:,}"
        )
        return "\n".join([head, *(f"  {s}" for s in self.stages)])


# Failures kept in the report; the counts are always complete.
MAX_KEPT_FAILURES = 100


def accounting_problems(admitted: int, stages: tuple[StageStats, ...], taken: int) -> list[str]:
    """Every way ``stages`` break the identity (empty when the books balance); ``taken``:
    outputs of the last stage handed to the consumer."""
    problems = []
    upstream = ("the source", admitted)
    for stage in stages:
        name, handed = upstream
        if stage.received != handed:
            problems.append(
                f"{name} handed on {handed} items but {stage.name} received {stage.received}"
            )
        if stage.received != stage.settled:
            problems.append(
                f"{stage.name} received {stage.received} items but settled {stage.settled} "
                f"({stage.emitted} emitted, {stage.filtered} filtered, {stage.failed} failed, "
                f"{stage.cancelled} cancelled)"
            )
        upstream = (stage.name, stage.outputs)
    if stages and stages[-1].outputs != taken:
        problems.append(
            f"{stages[-1].name} handed on {stages[-1].outputs} items but the consumer got {taken}"
        )
    return problems


__all__ = [
    "MAX_KEPT_FAILURES",
    "Failure",
    "PipelineReport",
    "StageEvent",
    "StageStats",
    "accounting_problems",
]
