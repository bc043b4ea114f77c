"""What every engine adapter offers the workloads.

A workload opens a :class:`Session` (one pool of one engine) and calls ``map``, ``call`` or
``imap`` on it. An adapter overrides only what its engine can do; the rest raises
:class:`Unsupported`, which the case runner records as "n/a" rather than a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any


class Unavailable(Exception):
    """The engine's package cannot be imported (or lacks the API the adapter needs)."""


class Unsupported(Exception):
    """The engine has no way to do what the workload asks (e.g. loky has no thread pool)."""


PROCESS = "process"
THREAD = "thread"


class Session:
    """One open pool. Use as a context manager: leaving it shuts the pool down."""

    # Whether ``call`` may run in many threads at once (the "callers" workload).
    concurrent_calls = True

    def map(self, fn: Callable[[Any], Any], items: list[Any], chunksize: int | None = None) -> list:
        """All results, in order. ``chunksize=None`` means the engine's own default."""
        raise Unsupported("map")

    def call(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """One round trip through the engine's asynchronous API: submit, then wait."""
        raise Unsupported("call")

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator:
        """The engine's most lazy way of mapping over an iterator, results in order."""
        raise Unsupported("imap")

    def abandon(self, iterator: Iterator) -> None:
        """Tell the engine the consumer of ``imap`` has stopped (generators: ``close()``)."""
        close = getattr(iterator, "close", None)
        if close is not None:
            close()

    def stats(self) -> Any:
        """The engine's own statistics snapshot, if it has one (kept in the JSON)."""
        return None

    def close(self) -> None:
        """Shut the pool down and wait for its workers; cancel what is still queued."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def only_process_backend(backend: str, start_method: str | None = None) -> None:
    """Guard for adapters that have no thread pool and no start-method choice."""
    if backend != PROCESS:
        raise Unsupported(f"no {backend} backend")
    if start_method is not None:
        raise Unsupported("start method is not selectable")


def chunk_kwargs(name: str, chunksize: int | None) -> dict[str, int]:
    """Pass a chunk size only when asked, so ``None`` keeps the engine's own default."""
    return {} if chunksize is None else {name: chunksize}
