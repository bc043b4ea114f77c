"""A stage's window: the items in flight in it, by index, and the order they go on in.

Items are numbered as the stage admits them. ``inputs`` and ``results`` are two lists
aligned on that number (offset by ``base``, and trimmed from the front as items go on),
so that a chunk's results land with one slice assignment and go on with one slice: the
per-item cost stays at C speed, which is what lets a pipeline move a million tiny items
a second's fraction each. A result is ``_PENDING`` until it arrives, a ``_Failed`` for an
item that raised, and for a batch stage ``None`` on every item but a batch's last.

In order, items go on up to the *frontier*, the first index not finished; what finished
beyond it waits (head-of-line blocking, measured in item-seconds). With ``ordered=False``
they go on in the order they finished (``ready``).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from itertools import chain, compress
from typing import Any

from ._report import Failure
from ._spec import StageKind

_PENDING: Any = type("_Pending", (), {"__repr__": lambda self: "<pending>"})()
_RELEASED: Any = type("_Released", (), {"__repr__": lambda self: "<released>"})()
# Trim the lists once this many items at their front have gone on (and half of them has).
_TRIM_AT = 1024


class _Failed:
    __slots__ = ("error", "failure")

    def __init__(self, error: BaseException, failure: Failure) -> None:
        self.error = error
        self.failure = failure  # what goes on in its place, with on_error="emit"


class Window:
    def __init__(self, kind: StageKind, ordered: bool, *, emit_failures: bool = False) -> None:
        self.kind = kind
        self.ordered = ordered
        self.emit_failures = emit_failures
        self.base = 0
        self.inputs: list[Any] = []
        self.results: list[Any] = []
        self.admitted = 0
        self.released = 0
        self.frontier = 0  # ordered: the first index not finished
        self._next_ordered = 0  # ordered: the first index not handed on
        self.ready: list[int] = []  # unordered: finished indices, in the order they finished
        self._low = 0  # unordered: the first index not handed on
        self._failures = 0  # _Failed results not yet handed on
        self.emitted = 0
        self.filtered = 0
        self.failed = 0
        self.outputs = 0
        self.head_of_line_s = 0.0
        self.head_of_line_peak = 0
        self._waiting: list[tuple[int, int, float]] = []  # heap of (first, count, since)
        self._waiting_items = 0

    @property
    def in_flight(self) -> int:
        return self.admitted - self.released

    def item(self, index: int) -> Any:
        return self.inputs[index - self.base]

    # --- in --------------------------------------------------------------------------------

    def admit(self, items: list[Any]) -> None:
        self.inputs.extend(items)
        self.results.extend([_PENDING] * len(items))
        self.admitted += len(items)

    def finish(self, indices: Sequence[int], values: Sequence[Any], now: float) -> None:
        base, results = self.base, self.results
        if isinstance(indices, range) and indices.step == 1:
            results[indices.start - base : indices.stop - base] = values
            if not self.ordered:
                self.ready.extend(indices)
        else:
            for index, value in zip(indices, values, strict=True):
                results[index - base] = value
            if not self.ordered:
                self.ready.extend(indices)
        if self.ordered and indices:
            contiguous = isinstance(indices, range) and indices.step == 1
            self._advance(indices[0], len(indices) if contiguous else 1, now)

    def fail(self, index: int, exc: BaseException, now: float, stage: str) -> Failure:
        """Record that the item raised; return its ``Failure``."""
        failure = Failure(stage, index, self.item(index), exc)
        self.results[index - self.base] = _Failed(exc, failure)
        self._failures += 1
        if self.ordered:
            self._advance(index, 1, now)
        else:
            self.ready.append(index)
        return failure

    def finish_batch(self, first: int, batch: list[Any], now: float) -> None:
        """A batch stage's items ``first``.. became ``batch``."""
        stop = first + len(batch)
        self.results[first - self.base : stop - self.base] = [None] * (len(batch) - 1) + [batch]
        if self.ordered:
            self._advance(first, len(batch), now)
        else:
            self.ready.extend(range(first, stop))

    # --- out -------------------------------------------------------------------------------

    def release(self, room: int) -> list[Any]:
        """Hand on finished items while their outputs fit in ``room``; return the outputs."""
        if self.ordered:
            available = self.frontier - self._next_ordered
            if available <= 0:
                return []
            start = self._front()
            count = self._fitting(room, available, start, None)
            if count == 0:
                return []
            values = self.results[start : start + count]
            inputs = self.inputs[start : start + count] if self.kind is StageKind.FILTER else None
            out = self._hand_on(values, inputs)
            self._next_ordered += count
            self.released += count
            self._trim(self._next_ordered)
            return out
        if not self.ready:
            return []
        count = self._fitting(room, len(self.ready), 0, self.ready)
        if count == 0:
            return []
        taken = self.ready[:count]
        del self.ready[:count]
        base, results = self.base, self.results
        values = [results[i - base] for i in taken]
        inputs = None
        if self.kind is StageKind.FILTER:
            inputs = [self.inputs[i - base] for i in taken]
        for i in taken:
            results[i - base] = _RELEASED
        out = self._hand_on(values, inputs)
        self.released += count
        low = self._low
        while low < self.admitted and results[low - base] is _RELEASED:
            low += 1
        self._low = low
        self._trim(low)
        return out

    def has_finished(self) -> bool:
        """Something finished is waiting to go on."""
        if self.ordered:
            return self.frontier > self._next_ordered
        return bool(self.ready)

    def settle(self) -> tuple[int, int]:
        """The run stopped: (failed, cancelled) among the items in flight; none remain."""
        pending = self.results[self._front() :] if self.ordered else self.results
        failed = sum(1 for r in pending if r.__class__ is _Failed)
        cancelled = self.in_flight - failed
        self.failed += failed
        self.released = self.admitted
        self.inputs.clear()
        self.results.clear()
        self.ready.clear()
        self.base = self.frontier = self._low = self._next_ordered = self.admitted
        return failed, cancelled

    # --- internals ---------------------------------------------------------------------

    def _front(self) -> int:
        return self._next_ordered - self.base

    def _fitting(self, room: int, available: int, start: int, ready: list[int] | None) -> int:
        """How many of the ``available`` finished items to hand on, given ``room``."""
        kind = self.kind
        if kind is StageKind.EACH:
            return available  # nothing goes on but the count
        if kind is StageKind.FLAT_MAP:
            return self._fitting_children(room, available, start, ready)
        if kind is StageKind.BATCH:
            return available if room > 0 else 0
        return max(0, min(available, room))

    def _fitting_children(
        self, room: int, available: int, start: int, ready: list[int] | None
    ) -> int:
        results, base = self.results, self.base
        count = children = 0
        while count < available:
            value = results[start + count] if ready is None else results[ready[count] - base]
            size = len(value) if value.__class__ is list else 0
            if size and children + size > room and (children or room <= 0):
                break  # one item's children may overfill the next inbox, once
            children += size
            count += 1
        return count

    def _hand_on(self, values: list[Any], inputs: list[Any] | None) -> list[Any]:
        """Count the fates of ``values`` (finished results, in order) and return outputs."""
        if self._failures:
            if self.emit_failures:
                return self._hand_on_emitting(values, inputs)
            values, inputs = self._drop_failures(values, inputs)
        return self._outputs_of(values, inputs)

    def _drop_failures(
        self, values: list[Any], inputs: list[Any] | None
    ) -> tuple[list[Any], list[Any] | None]:
        kept = [v for v in values if v.__class__ is not _Failed]
        failed = len(values) - len(kept)
        if failed:
            if inputs is not None:
                pairs = zip(inputs, values, strict=True)
                inputs = [i for i, v in pairs if v.__class__ is not _Failed]
            self._failures -= failed
            self.failed += failed
        return kept, inputs

    def _outputs_of(self, values: list[Any], inputs: list[Any] | None) -> list[Any]:
        """Outputs of results that all succeeded, their fates counted."""
        ok, kind = len(values), self.kind
        if kind is StageKind.MAP:
            out = values
        elif kind is StageKind.FILTER:
            assert inputs is not None
            out = list(compress(inputs, values))
        elif kind is StageKind.FLAT_MAP:
            out = list(chain.from_iterable(values))
            empty = values.count([])
            self.filtered += empty
            self.emitted += ok - empty
            self.outputs += len(out)
            return out
        elif kind is StageKind.BATCH:
            out = [v for v in values if v is not None]
        else:
            out = []
        if kind is StageKind.FILTER:
            self.filtered += ok - len(out)
            self.emitted += len(out)
        else:
            self.emitted += ok
        self.outputs += len(out)
        return out

    def _hand_on_emitting(self, values: list[Any], inputs: list[Any] | None) -> list[Any]:
        """The slow path, item by item, for a slice holding failures that go on as their
        ``Failure`` records (``on_error="emit"``): counted failed, handed on in place."""
        out: list[Any] = []
        for position, value in enumerate(values):
            if value.__class__ is _Failed:
                self._failures -= 1
                self.failed += 1
                self.outputs += 1
                out.append(value.failure)
                continue
            item = [inputs[position]] if inputs is not None else None
            out.extend(self._outputs_of([value], item))
        return out

    def _advance(self, first: int, count: int, now: float) -> None:
        """Results for ``first`` and the ``count - 1`` after it arrived (perhaps more, not
        contiguous): move the frontier, settle the head-of-line waits it ends."""
        frontier = self.frontier
        if first > frontier:
            heapq.heappush(self._waiting, (first, count, now))
            self._waiting_items += count
            if self._waiting_items > self.head_of_line_peak:
                self.head_of_line_peak = self._waiting_items
            return
        if first < frontier:
            return  # a retried item behind the frontier cannot be: the frontier waits for it
        results, base, end = self.results, self.base, self.admitted
        frontier = first + count
        while frontier < end and results[frontier - base] is not _PENDING:
            frontier += 1
        self.frontier = frontier
        waiting = self._waiting
        while waiting and waiting[0][0] < frontier:
            _, waited, since = heapq.heappop(waiting)
            self.head_of_line_s += waited * (now - since)
            self._waiting_items -= waited

    def _trim(self, first_kept: int) -> None:
        cut = first_kept - self.base
        if cut >= _TRIM_AT and 2 * cut >= len(self.results):
            del self.results[:cut]
            del self.inputs[:cut]
            self.base = first_kept


__all__ = ["Window"]
