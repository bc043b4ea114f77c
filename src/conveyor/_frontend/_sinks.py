"""``SinkWrapper``: a job's sink with something done on the way, the rest passed on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._engine._jobs import Sink


class SinkWrapper:
    """Passes every outcome to ``sink``; subclasses add to the calls they care about."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def deliver(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        self.sink.deliver(indices, values)

    def fail(self, index: int, exc: BaseException) -> None:
        self.sink.fail(index, exc)

    def input_failed(self, index: int, exc: BaseException) -> None:
        self.sink.input_failed(index, exc)

    def claim(self) -> bool:
        return self.sink.claim()

    def close(self, total: int) -> None:
        self.sink.close(total)

    def abort(self, exc: BaseException) -> None:
        self.sink.abort(exc)


__all__ = ["SinkWrapper"]
